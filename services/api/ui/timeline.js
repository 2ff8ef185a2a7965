// The saga timeline: its history turned into attempts (command sent → reply received,
// timeout or still in flight) and markers, then drawn as an SVG picture with one lane
// per step. Long idle stretches (a FAILED saga waiting for an operator) are folded so
// the interesting seconds stay readable; the fold is marked and labelled.

import { fmtDuration, fmtTime, s } from "./dom.js";

// History entries are typed (orchestrator/history.py): the timeline reads their fields.
export const EPILOGUE_LANE = "after compensation";
const ACTIVE = new Set(["RUNNING", "COMPENSATING"]);

/**
 * Attempts and markers of a saga, from its history (oldest first).
 *
 * Only one command of a saga is in flight at a time, so a reply or a timeout closes
 * the attempt opened by the last command sent; stale replies are recorded apart by
 * the orchestrator and never close one.
 */
export function buildModel(story, nowMs) {
  const spans = [];
  const markers = [];
  let open = null;
  const close = (end, outcome, extra = {}) => {
    Object.assign(open, { end, outcome }, extra);
    spans.push(open);
    open = null;
  };
  for (const e of story.history) {
    const t = Date.parse(e.at);
    if (e.kind === "command_sent") {
      if (open) close(t, "superseded");
      open = {
        lane: e.step || EPILOGUE_LANE,
        purpose: e.purpose || "action",
        attempt: e.attempt || 1,
        command: e.message_type || e.detail,
        participant: e.participant || "",
        start: t,
        sentId: e.message_id,
      };
    } else if (e.kind === "reply_received") {
      if (open) {
        close(t, e.outcome || "succeeded", { reply: e.message_type || e.detail, reason: e.reason, replyId: e.message_id });
      }
    } else if (e.kind === "attempt_failed") {
      if (e.outcome === "timeout" && open) close(t, "timeout", { reason: e.reason });
    } else if (e.kind === "saga_ended") {
      markers.push({ t, type: "end", status: e.outcome, label: e.outcome, detail: e.detail });
    } else if (e.kind === "saga_started") {
      markers.push({ t, type: "start", label: "started", detail: e.detail });
    } else if (e.kind === "local_action") {
      spans.push({
        lane: e.step || EPILOGUE_LANE,
        purpose: e.purpose || (e.step ? "action" : "epilogue"),
        local: true,
        command: e.handler || e.detail,
        start: t,
        end: t,
        outcome: e.outcome || "succeeded",
        reason: e.reason,
      });
    } else if (e.kind === "stale_reply") {
      markers.push({ t, type: "stale", label: "", detail: `${e.detail} (message ${e.message_id})` });
    } else if (e.kind === "admin_retry" || e.kind === "admin_abort") {
      const action = e.kind.slice("admin_".length);
      markers.push({ t, type: "admin", action, label: `operator ${action}`, detail: `operator ${action}, ${e.detail}` });
    }
  }
  if (open) {
    const active = ACTIVE.has(story.saga.status);
    close(active ? Math.max(nowMs, open.start) : open.start, active ? "in-flight" : "no-reply");
  }
  return { spans, markers };
}

/**
 * The time axis: a time → x mapping, piecewise between consecutive event times.
 *
 * A saga's story mixes milliseconds (a healthy reply) with seconds (a timeout) and
 * hours (a FAILED saga waiting for an operator). So idle stretches longer than a sixth
 * of the picture are folded to a fixed width (never while an attempt is in flight:
 * slow attempts are the story), and every other stretch gets width partly in
 * proportion to its duration and mostly to its square root (and at least 12 px), which keeps a
 * 40 ms compensation visible next to a 3 s timeout. Durations are labelled, so nothing is lost.
 */
function makeScale(times, busy, x0, x1) {
  const points = [...new Set(times)].sort((a, b) => a - b);
  const t0 = points[0];
  const t1 = points[points.length - 1];
  const total = Math.max(t1 - t0, 1);
  const threshold = Math.max(1500, total / 6);
  const segments = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const [from, to] = [points[i], points[i + 1]];
    const folded = to - from > threshold && !busy.some(([a, b]) => a < to && b > from);
    segments.push({ from, to, d: to - from, folded });
  }
  const FOLD_W = 46;
  const MIN_W = 12;
  const open = segments.filter((g) => !g.folded);
  const room = Math.max((x1 - x0) * 0.5, x1 - x0 - FOLD_W * (segments.length - open.length));
  const sumD = open.reduce((a, g) => a + g.d, 0) || 1;
  const sumR = open.reduce((a, g) => a + Math.sqrt(g.d), 0) || 1;
  let x = x0;
  for (const g of segments) {
    g.x = x;
    const share = 0.3 * (g.d / sumD) + 0.7 * (Math.sqrt(g.d) / sumR);
    g.w = g.folded ? FOLD_W : Math.max(MIN_W, room * share);
    x += g.w;
  }
  const stretch = segments.length ? (x1 - x0) / (x - x0) : 1;
  for (const g of segments) {
    g.x = x0 + (g.x - x0) * stretch;
    g.w *= stretch;
  }
  const toX = (t) => {
    if (!segments.length || t <= t0) return x0;
    if (t >= t1) return x1;
    const g = segments.find((seg) => t <= seg.to) || segments[segments.length - 1];
    return g.x + (g.w * (t - g.from)) / Math.max(g.d, 1e-9);
  };
  const gaps = segments.filter((g) => g.folded);
  const active = Math.max(total - gaps.reduce((a, g) => a + g.d, 0), 1);
  return { x: toX, t0, t1, active, segments, gaps };
}

function niceStep(rough) {
  const exp = 10 ** Math.floor(Math.log10(Math.max(rough, 1)));
  for (const m of [1, 2, 5, 10]) if (m * exp >= rough) return m * exp;
  return 10 * exp;
}

const LABEL_W = 200;
const PAD_R = 28;
const AXIS_H = 24;
const EVENTS_H = 52;
const LANE_H = 46;
const FOOT_H = 22;
const charW = (text, size = 11) => text.length * size * 0.6;
const clip = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);

function spanTitle(span) {
  const lines = [];
  if (span.local) {
    lines.push(`local action ${span.command}: ${span.outcome}${span.reason ? ` (${span.reason})` : ""}`);
    lines.push(`at ${fmtTime(span.start)}`);
    return lines.join("\n");
  }
  lines.push(`${span.purpose} attempt ${span.attempt}: ${span.command} → ${span.participant}`);
  lines.push(`sent ${fmtTime(span.start)}  message ${span.sentId || "?"}`);
  if (span.reply) lines.push(`reply ${span.reply} (${span.outcome}) ${fmtTime(span.end)}  message ${span.replyId || "?"}`);
  else lines.push(`${span.outcome}${span.reason ? `: ${span.reason}` : ""}`);
  if (span.reply && span.reason) lines.push(`reason: ${span.reason}`);
  lines.push(`duration ${fmtDuration(span.end - span.start)}`);
  return lines.join("\n");
}

/**
 * The timeline of ``story`` (GET /admin/sagas/{id}/timeline) as an <svg>.
 *
 * @param {object} story - saga, lanes, epilogue, history.
 * @param {{width: number, now: number}} options - drawing width in pixels; the time
 *   an in-flight attempt is drawn up to.
 */
export function drawTimeline(story, { width, now }) {
  const { spans, markers } = buildModel(story, now);
  const laneNames = story.lanes.map((l) => l.name);
  if (spans.some((sp) => sp.lane === EPILOGUE_LANE)) laneNames.push(EPILOGUE_LANE);
  const height = AXIS_H + EVENTS_H + laneNames.length * LANE_H + FOOT_H;
  const x0 = LABEL_W + 12;
  const x1 = Math.max(width - PAD_R, x0 + 200);
  const svg = s("svg", {
    class: "timeline",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `Timeline of saga ${story.saga.saga_id}`,
    "data-testid": "timeline",
  });

  const times = [...spans.flatMap((sp) => [sp.start, sp.end]), ...markers.map((m) => m.t)];
  if (times.length === 0) times.push(Date.parse(story.saga.created_at));
  if (ACTIVE.has(story.saga.status)) times.push(now);
  const busy = spans.filter((sp) => sp.end > sp.start).map((sp) => [sp.start, sp.end]);
  const scale = makeScale(times, busy, x0, x1);
  const lanesTop = AXIS_H + EVENTS_H;
  const lanesBottom = lanesTop + laneNames.length * LANE_H;

  // Lanes: background, label (name, pivot tag, status and attempts).
  const steps = new Map(story.saga.steps.map((st) => [st.name, st]));
  const specs = new Map(story.lanes.map((l) => [l.name, l]));
  laneNames.forEach((name, i) => {
    const y = lanesTop + i * LANE_H;
    const spec = specs.get(name);
    const step = steps.get(name);
    const lane = s("g", { class: "lane", "data-lane": name, "data-testid": `lane-${name}` });
    lane.append(
      s("rect", { class: i % 2 ? "lane-bg odd" : "lane-bg", x: 0, y, width, height: LANE_H }),
      s("text", { class: "lane-name", x: 10, y: y + 19 }, name),
    );
    if (spec && spec.pivot) {
      // At the label column's right edge: clear of any step name.
      const px = LABEL_W - 44;
      lane.append(
        s("rect", { class: "pivot-tag", x: px, y: y + 8, width: 36, height: 15, rx: 7 }),
        s("text", { class: "pivot-text", x: px + 18, y: y + 19, "text-anchor": "middle" }, "pivot"),
        s("title", {}, "pivot: once this step succeeded the saga is never compensated"),
      );
    }
    if (step) {
      lane.append(
        s(
          "text",
          { class: "lane-sub", x: 10, y: y + 35 },
          s("tspan", { class: `st-${step.status.toLowerCase()}` }, step.status),
          ` · ${step.attempts} attempt${step.attempts === 1 ? "" : "s"}`,
        ),
      );
    } else {
      lane.append(s("text", { class: "lane-sub", x: 10, y: y + 35 }, clip(story.epilogue.join(", "), 32)));
    }
    const desc = spec ? `${spec.action}${spec.compensation ? `; undone by ${spec.compensation}` : ""}` : story.epilogue.join(", ");
    lane.append(s("title", {}, `${name}: ${desc}`));
    svg.append(lane);
  });

  // Time axis: offsets from the start at a "nice" step, only where time is not folded,
  // and never closer than 70 px.
  const step = niceStep(scale.active / Math.max(1, (x1 - x0) / 110));
  let lastX = -Infinity;
  for (const g of scale.segments.filter((seg) => !seg.folded)) {
    for (let k = Math.ceil((g.from - scale.t0) / step); scale.t0 + k * step <= g.to; k++) {
      const t = scale.t0 + k * step;
      const x = scale.x(t);
      if (x - lastX < 70) continue;
      lastX = x;
      svg.append(
        s("line", { class: "grid", x1: x, x2: x, y1: AXIS_H - 4, y2: lanesBottom }),
        s("text", { class: "tick", x, y: 14, "text-anchor": "middle" }, k === 0 ? fmtTime(t) : `+${fmtDuration(k * step)}`),
      );
    }
  }

  // Folded gaps: a band with a zigzag edge, and how long nothing happened.
  for (const g of scale.gaps) {
    const gx0 = scale.x(g.from) + 3;
    const gx1 = scale.x(g.to) - 3;
    if (gx1 - gx0 < 6) continue;
    const mid = (gx0 + gx1) / 2;
    let zig = `M ${mid - 3} ${AXIS_H}`;
    for (let y = AXIS_H, j = 0; y < lanesBottom; y += 6, j++) zig += ` L ${mid + (j % 2 ? -3 : 3)} ${y + 6}`;
    svg.append(
      s("rect", { class: "gap", x: gx0, y: AXIS_H, width: gx1 - gx0, height: lanesBottom - AXIS_H }),
      s("path", { class: "gap-zigzag", d: zig }),
      s("text", { class: "gap-label", x: mid, y: lanesBottom + 15, "text-anchor": "middle" }, `idle ${fmtDuration(g.to - g.from)}`),
      s("title", {}, `nothing happened for ${fmtDuration(g.to - g.from)} (folded)`),
    );
  }

  // Attempts: one bar each; compensations in their own colour; errors marked.
  const laneIndex = new Map(laneNames.map((n, i) => [n, i]));
  const labelEnds = new Map();
  const ordered = [...spans.filter((sp) => !sp.local), ...spans.filter((sp) => sp.local)];
  for (const sp of ordered) {
    const i = laneIndex.get(sp.lane);
    if (i === undefined) continue;
    const y = lanesTop + i * LANE_H;
    const xs = scale.x(sp.start);
    const group = s("g", { class: "attempt", "data-purpose": sp.purpose, "data-outcome": sp.outcome });
    if (sp.local) {
      const cy = y + 23;
      group.append(
        s("path", { class: `local ${sp.outcome}`, d: `M ${xs} ${cy - 7} L ${xs + 7} ${cy} L ${xs} ${cy + 7} L ${xs - 7} ${cy} Z` }),
        s("title", {}, spanTitle(sp)),
      );
      svg.append(group);
      continue;
    }
    const w = Math.max(4, scale.x(sp.end) - xs);
    const kind = sp.purpose === "action" ? "action" : sp.purpose;
    group.append(
      s("rect", { class: `bar ${kind} ${sp.outcome}`, x: xs, y: y + 16, width: w, height: 15, rx: 3 }),
      s("title", {}, spanTitle(sp)),
    );
    if (["failed", "timeout", "no-reply"].includes(sp.outcome)) {
      group.append(s("text", { class: "err-mark", x: xs + w + 3, y: y + 28 }, "✕"));
    } else if (sp.outcome === "rejected") {
      group.append(s("text", { class: "rej-mark", x: xs + w + 3, y: y + 28 }, "⊘"));
    }
    const label =
      (sp.purpose === "compensation" ? "undo " : sp.attempt > 1 ? `#${sp.attempt} ` : "") +
      (sp.outcome === "in-flight" ? "waiting " : sp.outcome === "timeout" ? "timeout " : "") +
      fmtDuration(sp.end - sp.start);
    // Above the bar, or ending at the picture's edge; skipped if it would overlap the
    // previous label of the lane (the bar's tooltip still has it).
    const lw = charW(label, 10);
    const lx = Math.min(xs, width - 4 - lw);
    const end = labelEnds.get(sp.lane) ?? -Infinity;
    if (lx >= end + 4) {
      group.append(s("text", { class: "dur", x: lx, y: y + 12 }, label));
      labelEnds.set(sp.lane, lx + lw);
    }
    svg.append(group);
  }

  // Saga events: start, end, stale replies; operator actions cut across every lane.
  // Two rows for labelled markers; stale replies (glyphs only, possibly many) on a
  // third, so they never push an operator action's label out.
  const rows = [AXIS_H + 15, AXIS_H + 32];
  const rowEnds = [-Infinity, -Infinity];
  const staleY = AXIS_H + 47;
  for (const m of markers.sort((a, b) => a.t - b.t)) {
    const x = scale.x(m.t);
    const g = s("g", { class: `marker ${m.type}`, "data-marker": m.type });
    // A label goes right of its marker, or left of it at the picture's right edge, on
    // the first of two rows where marker and label overlap nothing drawn before.
    const labelW = m.label ? charW(m.label) : 0;
    const gapX = m.type === "admin" ? 12 : 9;
    const right = x + gapX + labelW <= width - 4;
    const from = m.label ? (right ? x + gapX : x - gapX - labelW) : x - 6;
    const [lo, hi] = [Math.min(from, x - 6), Math.max(from + labelW, x + 6)];
    const row = m.type === "stale" ? -1 : rowEnds.findIndex((end) => lo >= end + 4);
    if (row !== -1) rowEnds[row] = hi;
    const cy = m.type === "stale" ? staleY - 4 : rows[row === -1 ? 0 : row] - 4;
    if (m.type === "admin") {
      g.append(
        s("line", { class: "admin-line", x1: x, x2: x, y1: AXIS_H + 2, y2: lanesBottom }),
        s("path", { class: "admin-flag", d: `M ${x} ${cy - 6} l 9 4 l -9 4 Z` }),
      );
    } else if (m.type === "stale") {
      g.append(s("path", { class: "stale-mark", d: `M ${x} ${cy - 6} l 6 11 l -12 0 Z` }));
    } else {
      g.append(s("circle", { class: `dot ${m.type} ${(m.status || "").toLowerCase()}`, cx: x, cy, r: 5 }));
    }
    if (row !== -1 && m.label) {
      const anchor = right ? { x: from } : { x: x - gapX, "text-anchor": "end" };
      g.append(s("text", { class: "marker-label", ...anchor, y: cy + 4 }, m.label));
    }
    g.append(s("title", {}, `${fmtTime(m.t)}  ${m.detail}`));
    svg.append(g);
  }
  return svg;
}

/** The messages of the history: commands sent, replies received, stale replies. */
export function messageRows(history) {
  const rows = [];
  for (const e of history) {
    if (e.kind === "command_sent") {
      rows.push({ at: e.at, direction: "sent", type: e.message_type || e.detail, peer: e.participant || "", step: e.step, note: e.purpose ? `${e.purpose}, attempt ${e.attempt}` : "", id: e.message_id });
    } else if (e.kind === "reply_received") {
      rows.push({ at: e.at, direction: "received", type: e.message_type || e.detail, peer: "", step: e.step, note: e.outcome ? `${e.outcome}${e.reason ? `: ${e.reason}` : ""}` : "", id: e.message_id });
    } else if (e.kind === "stale_reply") {
      rows.push({ at: e.at, direction: "stale", type: e.message_type || e.detail, peer: "", step: e.step, note: "ignored: not for the attempt in flight", id: e.message_id });
    }
  }
  return rows;
}
