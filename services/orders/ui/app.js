// The sagaway dashboard: overview, saga list, saga page. Plain ES modules, no build
// step; every view is a function of the hash route (#/, #/sagas?…, #/sagas/{id}).

import { ApiError, api, getToken, setToken } from "./api.js";
import {
  fmtCount,
  fmtDateTime,
  fmtDuration,
  fmtTime,
  h,
  mount,
  s,
  shortId,
  statusBadge,
} from "./dom.js";
import { drawTimeline, messageRows } from "./timeline.js";

const STATUSES = ["RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"];
const ACTIVE = new Set(["RUNNING", "COMPENSATING"]);
const FINISHED = ["COMPLETED", "COMPENSATED", "FAILED"];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const PAGE_SIZE = 25;
const OVERVIEW_REFRESH_MS = 5000;
const SAGA_REFRESH_MS = 1000;

const view = document.getElementById("view");
const banner = document.getElementById("banner");
let leaving = [];
let generation = 0;
let knownTypes = [];

// ------------------------------------------------------------------ routing

function onLeave(fn) {
  leaving.push(fn);
}

function every(ms, fn) {
  const id = setInterval(() => {
    if (document.visibilityState === "visible") fn();
  }, ms);
  onLeave(() => clearInterval(id));
}

function route() {
  for (const fn of leaving.splice(0)) fn();
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

function errorBox(err) {
  const detail = err instanceof ApiError ? err.message : String(err);
  const status = err instanceof ApiError && err.status ? ` (HTTP ${err.status})` : "";
  return h("div", { class: "error-box", role: "alert" }, `${detail}${status}`);
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

// ------------------------------------------------------------------ overview

async function renderOverview(live) {
  mount(view, h("div", { class: "loading" }, "Loading the overview…"));
  const draw = async () => {
    let data;
    try {
      data = await api("/admin/overview");
    } catch (err) {
      if (live()) mount(view, errorBox(err));
      return;
    }
    if (!live()) return;
    knownTypes = data.saga_types;
    mount(view, overviewView(data));
  };
  await draw();
  every(OVERVIEW_REFRESH_MS, draw);
}

function overviewView(data) {
  const capped = (n) => (n >= data.count_cap ? `${fmtCount(n)}+` : fmtCount(n));
  const cards = STATUSES.map((st) =>
    h(
      "a",
      {
        class: `card status-card status-${st.toLowerCase()}`,
        href: `#/sagas?status=${st}`,
        "data-testid": `count-${st}`,
        title: `List ${st} sagas`,
      },
      h("span", { class: "card-count" }, capped(data.counts[st] ?? 0)),
      h("span", { class: "card-label" }, st),
    ),
  );
  const totalBacklog = data.outbox.reduce((sum, o) => sum + o.unpublished, 0);
  const oldest = Math.max(0, ...data.outbox.map((o) => o.oldest_age_s ?? 0));
  const finished = data.throughput.reduce((sum, b) => sum + FINISHED.reduce((a, st) => a + (b.counts[st] || 0), 0), 0);
  return h(
    "div",
    { class: "overview", "data-testid": "overview" },
    h(
      "div",
      { class: "view-head" },
      h("h2", {}, "Overview"),
      h("span", { class: "muted" }, `as of ${fmtTime(data.at)} · refreshes every ${OVERVIEW_REFRESH_MS / 1000} s`),
    ),
    h("div", { class: "cards" }, cards),
    h(
      "div",
      { class: "grid" },
      h(
        "section",
        { class: "panel wide" },
        h(
          "h3",
          {},
          "Sagas finished per minute",
          h("span", { class: "muted" }, ` · last ${data.throughput.length} min · ${fmtCount(finished)} in all`),
        ),
        throughputChart(data.throughput),
        h(
          "div",
          { class: "legend" },
          FINISHED.map((st) => h("span", {}, h("i", { class: `swatch fill-${st.toLowerCase()}` }), st.toLowerCase())),
        ),
      ),
      h(
        "section",
        { class: "panel", "data-testid": "outbox-backlog" },
        h("h3", {}, "Outbox backlog"),
        h(
          "p",
          { class: "metric" },
          h("strong", {}, fmtCount(totalBacklog)),
          " unpublished",
          totalBacklog ? ` · oldest waiting ${fmtDuration(oldest * 1000)}` : "",
        ),
        h(
          "table",
          { class: "compact" },
          h("thead", {}, h("tr", {}, h("th", {}, "outbox"), h("th", { class: "num" }, "unpublished"), h("th", { class: "num" }, "oldest"))),
          h(
            "tbody",
            {},
            data.outbox.map((o) =>
              h(
                "tr",
                { class: o.unpublished ? "warn" : "" },
                h("td", {}, o.outbox),
                h("td", { class: "num" }, fmtCount(o.unpublished)),
                h("td", { class: "num" }, o.oldest_age_s === null ? "—" : fmtDuration(o.oldest_age_s * 1000)),
              ),
            ),
          ),
        ),
      ),
      h(
        "section",
        { class: "panel", "data-testid": "dead-letters" },
        h("h3", {}, "Dead letters"),
        data.dead_letters === null
          ? h("p", { class: "unavailable" }, "unavailable: ", data.dead_letters_error || "RabbitMQ did not answer")
          : [
              h(
                "p",
                { class: "metric" },
                h("strong", {}, fmtCount(data.dead_letters.reduce((a, d) => a + d.count, 0))),
                " messages dead-lettered",
              ),
              h(
                "table",
                { class: "compact" },
                h("thead", {}, h("tr", {}, h("th", {}, "queue"), h("th", { class: "num" }, "messages"))),
                h(
                  "tbody",
                  {},
                  data.dead_letters.map((d) =>
                    h("tr", { class: d.count ? "bad" : "" }, h("td", {}, d.queue), h("td", { class: "num" }, fmtCount(d.count))),
                  ),
                ),
              ),
            ],
      ),
    ),
  );
}

function niceMax(n) {
  // Even, so that the middle grid line is a whole number of sagas too.
  if (n <= 4) return 4;
  const exp = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 4, 6, 8, 10]) if (m * exp >= n) return m * exp;
  return 10 * exp;
}

function throughputChart(buckets) {
  const W = 1200;
  const H = 200;
  const left = 40;
  const bottom = 22;
  const top = 10;
  const plotH = H - top - bottom;
  const totals = buckets.map((b) => FINISHED.reduce((a, st) => a + (b.counts[st] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const slot = (W - left - 8) / buckets.length;
  const svg = s("svg", {
    class: "chart",
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": "Sagas finished per minute over the last minutes",
    "data-testid": "throughput-chart",
  });
  for (const frac of [0, 0.5, 1]) {
    const y = top + plotH * (1 - frac);
    svg.append(
      s("line", { class: "grid", x1: left, x2: W - 4, y1: y, y2: y }),
      s("text", { class: "tick", x: left - 6, y: y + 4, "text-anchor": "end" }, fmtCount(max * frac)),
    );
  }
  buckets.forEach((b, i) => {
    const x = left + i * slot + slot * 0.15;
    const w = slot * 0.7;
    let y = top + plotH;
    const g = s("g", { class: "bar-stack" });
    for (const st of FINISHED) {
      const n = b.counts[st] || 0;
      if (!n) continue;
      const bh = (plotH * n) / max;
      y -= bh;
      g.append(s("rect", { class: `fill-${st.toLowerCase()}`, x, y, width: w, height: Math.max(bh, 1), rx: 2 }));
    }
    if (!totals[i]) g.append(s("rect", { class: "empty", x, y: top + plotH - 1, width: w, height: 1 }));
    const at = new Date(b.minute);
    const label = `${String(at.getHours()).padStart(2, "0")}:${String(at.getMinutes()).padStart(2, "0")}`;
    g.append(
      s(
        "title",
        {},
        `${label}: ${totals[i]} finished (${FINISHED.map((st) => `${b.counts[st] || 0} ${st.toLowerCase()}`).join(", ")})`,
      ),
    );
    if (totals[i]) {
      g.append(s("text", { class: "bar-value", x: x + w / 2, y: y - 3, "text-anchor": "middle" }, fmtCount(totals[i])));
    }
    if (i % 5 === 0 || i === buckets.length - 1) {
      g.append(s("text", { class: "tick", x: x + w / 2, y: H - 6, "text-anchor": "middle" }, label));
    }
    svg.append(g);
  });
  return svg;
}

// ------------------------------------------------------------------ saga list

const FILTERS = ["status", "saga_type", "order_id", "customer_id", "created_from", "created_to"];
const pages = { key: null, cursors: [null] };

function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function filterForm(params) {
  const field = (label, control) => h("label", { class: "field" }, h("span", {}, label), control);
  const status = h(
    "select",
    { name: "status", "data-testid": "filter-status" },
    h("option", { value: "" }, "any"),
    STATUSES.map((st) => h("option", { value: st, selected: params.get("status") === st }, st)),
  );
  const types = h("datalist", { id: "saga-types" }, knownTypes.map((t) => h("option", { value: t })));
  const text = (name, placeholder, extra = {}) =>
    h("input", { name, placeholder, value: params.get(name) || "", "data-testid": `filter-${name}`, ...extra });
  const when = (name) =>
    h("input", { type: "datetime-local", name, value: toLocalInput(params.get(name)), "data-testid": `filter-${name}` });
  return h(
    "form",
    {
      class: "filters panel",
      "data-testid": "filters",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(event.target);
        const next = new URLSearchParams();
        for (const name of FILTERS) {
          let value = String(data.get(name) || "").trim();
          if (!value) continue;
          if (name.startsWith("created_")) value = new Date(value).toISOString();
          next.set(name, value);
        }
        const hash = `#/sagas${next.toString() ? `?${next}` : ""}`;
        if (location.hash === hash) route();
        else location.hash = hash;
      },
    },
    field("Status", status),
    field("Saga type", [text("saga_type", "any type", { list: "saga-types" }), types]),
    field("Order id", text("order_id", "UUID", { pattern: UUID_RE.source.slice(1, -1), title: "an order UUID" })),
    field("Customer id", text("customer_id", "e.g. c-42")),
    field("Created from", when("created_from")),
    field("Created before", when("created_to")),
    h(
      "div",
      { class: "filter-buttons" },
      h("button", { type: "submit", class: "primary", "data-testid": "filter-apply" }, "Apply"),
      h("a", { class: "button", href: "#/sagas" }, "Clear"),
    ),
  );
}

async function renderList(params, live) {
  const query = {};
  for (const name of FILTERS) if (params.get(name)) query[name] = params.get(name);
  const key = JSON.stringify(query);
  if (pages.key !== key) Object.assign(pages, { key, cursors: [null] });
  const results = h("div", { class: "results" }, h("div", { class: "loading" }, "Loading sagas…"));
  mount(view, h("div", { class: "view-head" }, h("h2", {}, "Sagas"), h("span", { class: "muted" }, "newest first")), filterForm(params), results);
  if (!knownTypes.length) {
    api("/admin/overview")
      .then((data) => {
        knownTypes = data.saga_types;
        const list = document.getElementById("saga-types");
        if (list && live()) mount(list, knownTypes.map((t) => h("option", { value: t })));
      })
      .catch(() => {});
  }
  const load = async () => {
    const page = pages.cursors.length - 1;
    let data;
    try {
      data = await api("/admin/sagas/search", { query: { ...query, limit: PAGE_SIZE, cursor: pages.cursors[page] } });
    } catch (err) {
      if (live()) mount(results, errorBox(err));
      return;
    }
    if (!live()) return;
    mount(results, listTable(data, page, load));
  };
  await load();
}

function listTable(data, page, load) {
  const pager = h(
    "div",
    { class: "pager" },
    h(
      "button",
      {
        type: "button",
        disabled: page === 0,
        onclick: () => {
          pages.cursors = [null];
          load();
        },
      },
      "⇤ Newest",
    ),
    h(
      "button",
      {
        type: "button",
        disabled: page === 0,
        "data-testid": "page-newer",
        onclick: () => {
          pages.cursors.pop();
          load();
        },
      },
      "← Newer",
    ),
    h("span", { class: "muted" }, `page ${page + 1} · ${data.items.length} shown`),
    h(
      "button",
      {
        type: "button",
        disabled: !data.next_cursor,
        "data-testid": "page-older",
        onclick: () => {
          pages.cursors.push(data.next_cursor);
          load();
        },
      },
      "Older →",
    ),
    h("button", { type: "button", onclick: () => load() }, "↻ Refresh"),
  );
  if (!data.items.length) return [h("div", { class: "panel empty" }, "No saga matches these filters."), pager];
  const rows = data.items.map((it) =>
    h(
      "tr",
      {
        class: "saga-row",
        "data-testid": "saga-row",
        "data-saga-id": it.saga_id,
        onclick: (event) => {
          if (event.target.closest("a")) return;
          location.hash = `#/sagas/${it.saga_id}`;
        },
      },
      h("td", { class: "nowrap" }, fmtDateTime(it.created_at)),
      h("td", {}, h("a", { href: `#/sagas/${it.saga_id}`, class: "mono", title: it.saga_id }, shortId(it.saga_id))),
      h("td", {}, it.saga_type),
      h("td", {}, statusBadge(it.status)),
      h("td", {}, it.current_step || "—"),
      h("td", {}, it.customer_id ? h("a", { href: `#/sagas?customer_id=${encodeURIComponent(it.customer_id)}` }, it.customer_id) : "—"),
      h("td", { class: "mono", title: it.order_id || "" }, shortId(it.order_id)),
      h("td", { class: "reason", title: it.failure_reason || "" }, it.failure_reason || ""),
    ),
  );
  return [
    h(
      "table",
      { class: "list", "data-testid": "saga-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["created", "saga", "type", "status", "step", "customer", "order", "failure reason"].map((c) => h("th", {}, c)),
        ),
      ),
      h("tbody", {}, rows),
    ),
    pager,
  ];
}

// ------------------------------------------------------------------ one saga

async function renderSaga(sagaId, live) {
  if (!UUID_RE.test(sagaId)) {
    mount(view, errorBox(`"${sagaId}" is not a saga id`));
    return;
  }
  mount(view, h("div", { class: "loading" }, "Loading the saga…"));
  const state = { story: null, notice: null, abortArmed: false, busy: false, timer: null };
  const timelineBox = h("div", { class: "timeline-box" });
  const redrawTimeline = () => {
    if (!state.story) return;
    const width = Math.max(640, timelineBox.clientWidth || view.clientWidth - 40);
    mount(timelineBox, drawTimeline(state.story, { width, now: Date.now() }));
  };
  const onResize = () => redrawTimeline();
  window.addEventListener("resize", onResize);
  onLeave(() => window.removeEventListener("resize", onResize));

  const load = async () => {
    try {
      state.story = await api(`/admin/sagas/${sagaId}/timeline`);
    } catch (err) {
      if (live()) mount(view, h("a", { href: "#/sagas" }, "← Sagas"), errorBox(err));
      return;
    }
    if (!live()) return;
    draw();
  };

  const act = async (action) => {
    state.busy = true;
    state.notice = null;
    draw();
    try {
      const result = await api(`/admin/sagas/${sagaId}/${action}`, { method: "POST" });
      state.notice = {
        kind: "ok",
        text: `${action === "retry" ? "Retry" : "Abort"} accepted at ${fmtTime(Date.now())}: the saga went ${result.status}.`,
      };
    } catch (err) {
      state.notice = { kind: "error", text: err instanceof ApiError ? `${action} refused: ${err.message}` : String(err) };
    }
    state.busy = false;
    state.abortArmed = false;
    await load();
  };

  const draw = () => {
    const { saga, actions, customer_id: customer } = state.story;
    const history = state.story.history;
    const fact = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));
    const retry = h(
      "button",
      {
        type: "button",
        class: "primary",
        "data-testid": "retry-button",
        disabled: !actions.retry || state.busy,
        title: actions.retry ? "Run the failed step (or compensation) again with a fresh attempt budget" : "Only a FAILED saga can be retried",
        onclick: () => act("retry"),
      },
      "⟳ Retry",
    );
    const abort = h(
      "button",
      {
        type: "button",
        class: state.abortArmed ? "danger armed" : "danger",
        "data-testid": "abort-button",
        disabled: !actions.abort || state.busy,
        title: actions.abort_blocked || "Compensate the completed steps; the saga ends COMPENSATED (aborted)",
        onclick: () => {
          if (!state.abortArmed) {
            state.abortArmed = true;
            draw();
            setTimeout(() => {
              if (state.abortArmed && !state.busy) {
                state.abortArmed = false;
                if (live()) draw();
              }
            }, 5000);
            return;
          }
          act("abort");
        },
      },
      state.abortArmed ? "Confirm abort" : "✕ Abort",
    );
    const started = Date.parse(saga.created_at);
    const ended = ACTIVE.has(saga.status) ? Date.now() : Date.parse(saga.updated_at);
    const messages = messageRows(history);
    mount(
      view,
      h("a", { href: "#/sagas", class: "back" }, "← Sagas"),
      h(
        "section",
        { class: "panel saga-head", "data-testid": "saga-head" },
        h(
          "div",
          { class: "saga-title" },
          h("h2", {}, "Saga ", h("span", { class: "mono" }, saga.saga_id)),
          statusBadge(saga.status, { "data-testid": "saga-status", class: `badge big status-${saga.status.toLowerCase()}` }),
          ACTIVE.has(saga.status) ? h("span", { class: "live" }, "live") : null,
        ),
        h(
          "dl",
          { class: "facts" },
          fact("type", saga.saga_type),
          fact("order", saga.order_id ? h("a", { href: `#/sagas?order_id=${saga.order_id}`, class: "mono" }, saga.order_id) : "—"),
          fact("customer", customer ? h("a", { href: `#/sagas?customer_id=${encodeURIComponent(customer)}` }, customer) : "—"),
          fact("current step", saga.current_step || "—"),
          fact("created", fmtDateTime(saga.created_at)),
          fact("updated", fmtDateTime(saga.updated_at)),
          fact(ACTIVE.has(saga.status) ? "running for" : "took", fmtDuration(ended - started)),
        ),
        saga.failure_reason
          ? h("div", { class: "failure", "data-testid": "failure-reason" }, h("strong", {}, "failure reason: "), saga.failure_reason)
          : null,
        h(
          "div",
          { class: "actions" },
          retry,
          abort,
          saga.status === "FAILED" && !actions.abort && actions.abort_blocked
            ? h("span", { class: "muted", "data-testid": "abort-blocked" }, `abort unavailable: ${actions.abort_blocked}`)
            : null,
          state.notice
            ? h("span", { class: `notice ${state.notice.kind}`, role: "status", "data-testid": "action-notice" }, state.notice.text)
            : null,
        ),
      ),
      h(
        "section",
        { class: "panel" },
        h("h3", {}, "Timeline"),
        timelineBox,
        h(
          "div",
          { class: "legend" },
          [
            ["bar action succeeded", "attempt succeeded"],
            ["bar action failed", "technical failure"],
            ["bar action timeout", "no reply in time"],
            ["bar action rejected", "rejected (business)"],
            ["bar compensation succeeded", "compensation"],
            ["bar action in-flight", "in flight"],
          ].map(([cls, text]) => h("span", {}, h("i", { class: `swatch ${cls}` }), text)),
          h("span", {}, h("i", { class: "swatch diamond" }), "local action"),
          h("span", {}, h("i", { class: "swatch admin" }), "operator action"),
          h("span", {}, h("i", { class: "swatch stale" }), "stale reply"),
          h("span", { class: "muted" }, "hover a bar for its messages"),
        ),
      ),
      h(
        "section",
        { class: "panel" },
        h("h3", {}, `Messages (${messages.length})`),
        h(
          "table",
          { class: "compact messages", "data-testid": "messages" },
          h("thead", {}, h("tr", {}, ["time", "", "message", "step", "", "message id"].map((c) => h("th", {}, c)))),
          h(
            "tbody",
            {},
            messages.map((m) =>
              h(
                "tr",
                { class: `msg-${m.direction}` },
                h("td", { class: "nowrap mono" }, fmtTime(m.at)),
                h("td", { class: "dir" }, m.direction === "sent" ? "→ sent" : m.direction === "received" ? "← received" : "⚠ stale"),
                h("td", {}, h("strong", {}, m.type), m.peer ? ` to ${m.peer}` : ""),
                h("td", {}, m.step || "—"),
                h("td", {}, m.note),
                h("td", { class: "mono small nowrap" }, m.id || "—"),
              ),
            ),
          ),
        ),
      ),
      h(
        "section",
        { class: "panel" },
        h("h3", {}, `History (${history.length})`),
        h(
          "table",
          { class: "compact history", "data-testid": "history" },
          h("thead", {}, h("tr", {}, ["time", "+", "kind", "step", "detail", "message id"].map((c) => h("th", {}, c)))),
          h(
            "tbody",
            {},
            history.map((e) =>
              h(
                "tr",
                { class: `kind-${e.kind}` },
                h("td", { class: "nowrap mono" }, fmtTime(e.at)),
                h("td", { class: "nowrap muted" }, fmtDuration(Date.parse(e.at) - started)),
                h("td", {}, h("span", { class: "kind" }, e.kind)),
                h("td", {}, e.step || ""),
                h("td", {}, e.detail),
                h("td", { class: "mono small nowrap" }, e.message_id || ""),
              ),
            ),
          ),
        ),
      ),
    );
    redrawTimeline();
  };

  await load();
  every(SAGA_REFRESH_MS, () => {
    if (state.story && ACTIVE.has(state.story.saga.status) && !state.busy) load();
  });
}

// ------------------------------------------------------------------ start

window.addEventListener("hashchange", route);
window.addEventListener("sagaway:token", renderTokenArea);
route();
