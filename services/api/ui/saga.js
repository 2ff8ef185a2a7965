// One saga: header with retry and abort, the timeline picture, the messages sent and
// received, and the whole history; it follows an active saga live.

import { ApiError, api } from "./api.js";
import { fmtDateTime, fmtDuration, fmtTime, h, mount, statusBadge } from "./dom.js";
import { ACTIVE, UUID_RE, errorBox, every, onLeave, view } from "./shell.js";
import { drawTimeline, messageRows } from "./timeline.js";

const SAGA_REFRESH_MS = 1000;

export async function renderSaga(sagaId, live) {
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
          h("span", { class: "muted" }, "hover a bar for its messages · time axis: idle stretches folded, short ones widened (durations are labelled)"),
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
