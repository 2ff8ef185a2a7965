// The saga list: filters (status, type, order, customer, creation time) kept in the
// URL, pages newest first through GET /admin/sagas/search's keyset cursors.

import { api } from "./api.js";
import { fmtDateTime, h, mount, shortId, statusBadge } from "./dom.js";
import { STATUSES, UUID_RE, errorBox, known, view } from "./shell.js";

const PAGE_SIZE = 25;

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
  const types = h("datalist", { id: "saga-types" }, known.sagaTypes.map((t) => h("option", { value: t })));
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
        // The same filters again: reload the list (no hashchange would fire).
        if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
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

export async function renderList(params, live) {
  const query = {};
  for (const name of FILTERS) if (params.get(name)) query[name] = params.get(name);
  const key = JSON.stringify(query);
  if (pages.key !== key) Object.assign(pages, { key, cursors: [null] });
  const results = h("div", { class: "results" }, h("div", { class: "loading" }, "Loading sagas…"));
  mount(view, h("div", { class: "view-head" }, h("h2", {}, "Sagas"), h("span", { class: "muted" }, "newest first")), filterForm(params), results);
  if (!known.sagaTypes.length) {
    api("/admin/overview")
      .then((data) => {
        known.sagaTypes = data.saga_types;
        const list = document.getElementById("saga-types");
        if (list && live()) mount(list, known.sagaTypes.map((t) => h("option", { value: t })));
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
