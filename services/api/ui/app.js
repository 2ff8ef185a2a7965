// The sagaway dashboard: overview, saga list, saga page. Plain ES modules, no build
// step; every view is a function of the hash route (#/, #/sagas?…, #/sagas/{id}).

import { getToken, setToken } from "./api.js";
import { h, mount } from "./dom.js";
import { renderOverview } from "./overview.js";
import { renderSaga } from "./saga.js";
import { renderList } from "./sagas.js";
import { leave, view } from "./shell.js";

const banner = document.getElementById("banner");
let generation = 0;

// ------------------------------------------------------------------ routing

function route() {
  leave();
  const mine = ++generation;
  const live = () => mine === generation;
  const [path, query] = (location.hash.replace(/^#/, "") || "/").split("?");
  const params = new URLSearchParams(query || "");
  for (const link of document.querySelectorAll("nav a[data-route]")) {
    const active = link.dataset.route === "/" ? path === "/" : path.startsWith(link.dataset.route);
    link.classList.toggle("active", active);
  }
  renderTokenArea();
  if (!getToken()) return renderTokenNeeded();
  const saga = /^\/sagas\/([^/]+)$/.exec(path);
  if (path === "/") return renderOverview(live);
  if (path === "/sagas") return renderList(params, live);
  if (saga) return renderSaga(decodeURIComponent(saga[1]), live);
  mount(view, h("div", { class: "panel" }, h("h2", {}, "Not found"), h("a", { href: "#/" }, "Back to the overview")));
}

function showBanner(message, kind = "error") {
  if (!message) {
    banner.hidden = true;
    return;
  }
  mount(banner, message);
  banner.className = `banner ${kind}`;
  banner.hidden = false;
}

// ------------------------------------------------------------------ the admin token

function tokenForm(large) {
  const input = h("input", {
    type: "password",
    name: "token",
    placeholder: "admin token",
    autocomplete: "off",
    "aria-label": "Admin token",
    "data-testid": "token-input",
    required: true,
  });
  return h(
    "form",
    {
      class: large ? "token-form large" : "token-form",
      onsubmit: (event) => {
        event.preventDefault();
        if (!input.value.trim()) return;
        setToken(input.value.trim());
        showBanner(null);
        route();
      },
    },
    input,
    h("button", { type: "submit", class: "primary", "data-testid": "token-save" }, "Use token"),
  );
}

function renderTokenArea() {
  const area = document.getElementById("token-area");
  if (getToken()) {
    mount(
      area,
      h("span", { class: "token-set", "data-testid": "token-set" }, "admin token set"),
      h(
        "button",
        {
          type: "button",
          class: "link",
          onclick: () => {
            setToken(null);
            route();
          },
        },
        "forget",
      ),
    );
  } else {
    mount(area, h("span", { class: "token-missing" }, "no admin token"));
  }
}

function renderTokenNeeded() {
  mount(
    view,
    h(
      "div",
      { class: "panel token-panel" },
      h("h2", {}, "Admin token"),
      h(
        "p",
        {},
        "The dashboard reads the admin API. Enter the token the API was started with ",
        h("code", {}, "SAGAWAY_ADMIN_TOKEN"),
        "; it is kept for this browser tab only (sessionStorage) and sent as ",
        h("code", {}, "Authorization: Bearer"),
        ".",
      ),
      tokenForm(true),
    ),
  );
  view.querySelector("input")?.focus();
}

window.addEventListener("sagaway:unauthorized", () => {
  setToken(null);
  showBanner("The admin token was refused (401): enter it again.");
  route();
});

// ------------------------------------------------------------------ start

window.addEventListener("hashchange", route);
window.addEventListener("sagaway:token", renderTokenArea);
route();
