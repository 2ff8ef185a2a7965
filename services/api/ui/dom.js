// Small helpers to build DOM and SVG without innerHTML (text from the API is never
// parsed as markup), and to format times, durations and ids for operators.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
  return node;
}

/** An HTML element: h("a", {href: "#/"}, "text", child, [more]). */
export function h(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

/** An SVG element; a <title> child gives it a native tooltip. */
export function s(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** Replace every child of ``node``. */
export function mount(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** Local date and time, to the second: 2026-05-01 14:03:22. */
export function fmtDateTime(value) {
  if (!value) return "—";
  const d = new Date(value);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** Local time to the millisecond: 14:03:22.417. */
export function fmtTime(value) {
  const d = new Date(value);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** A duration in milliseconds, as a person reads it: 850 ms, 3.2 s, 4 m 05 s, 2 h 10 m. */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1) return "<1 ms";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10_000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const totalS = Math.round(ms / 1000);
  if (totalS < 3600) return `${Math.floor(totalS / 60)} m ${pad(totalS % 60)} s`;
  const totalM = Math.round(totalS / 60);
  if (totalM < 48 * 60) return `${Math.floor(totalM / 60)} h ${pad(totalM % 60)} m`;
  return `${Math.round(totalM / 1440)} d`;
}

/** The first block of a UUID, enough to tell sagas apart on screen. */
export function shortId(id) {
  return id ? String(id).slice(0, 8) : "—";
}

/** 1234567 → "1,234,567". */
export function fmtCount(n) {
  return Number(n).toLocaleString("en-US");
}

/** A coloured pill for a saga or step status. */
export function statusBadge(status, attrs = {}) {
  return h("span", { class: `badge status-${String(status).toLowerCase()}`, ...attrs }, status);
}
