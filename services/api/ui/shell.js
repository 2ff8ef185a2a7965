// What every view shares: status names, the <main> element, timers that stop when the
// view is left, the error box, and what one view learnt that another can use.

import { ApiError } from "./api.js";
import { h } from "./dom.js";

export const STATUSES = ["RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"];
export const ACTIVE = new Set(["RUNNING", "COMPENSATING"]);
export const FINISHED = ["COMPLETED", "COMPENSATED", "FAILED"];
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const view = document.getElementById("view");

/** Saga types seen in the last overview (the list's type suggestions). */
export const known = { sagaTypes: [] };

const leaving = [];

/** Run ``fn`` when the current view is left. */
export function onLeave(fn) {
  leaving.push(fn);
}

/** Called by the router before it draws another view. */
export function leave() {
  for (const fn of leaving.splice(0)) fn();
}

/** Call ``fn`` every ``ms`` while the tab is visible, until the view is left. */
export function every(ms, fn) {
  const id = setInterval(() => {
    if (document.visibilityState === "visible") fn();
  }, ms);
  onLeave(() => clearInterval(id));
}

/** An API error (or any error) as a box on the page. */
export function errorBox(err) {
  const detail = err instanceof ApiError ? err.message : String(err);
  const status = err instanceof ApiError && err.status ? ` (HTTP ${err.status})` : "";
  return h("div", { class: "error-box", role: "alert" }, `${detail}${status}`);
}
