// The overview: sagas by status, sagas finished per minute (an SVG bar chart), outbox
// backlog and dead letters; it refreshes itself every few seconds.

import { api } from "./api.js";
import { fmtCount, fmtDuration, fmtTime, h, mount, s } from "./dom.js";
import { FINISHED, STATUSES, errorBox, every, known, view } from "./shell.js";

const OVERVIEW_REFRESH_MS = 5000;

export async function renderOverview(live) {
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
    known.sagaTypes = data.saga_types;
    mount(view, overviewView(data));
  };
  await draw();
  every(OVERVIEW_REFRESH_MS, draw);
}

function overviewView(data) {
  const estimated = new Set(data.estimated);
  const shown = (st) => {
    const n = data.counts[st] ?? 0;
    if (estimated.has(st)) return `≈ ${fmtCount(n)}`;
    return n >= data.count_cap ? `${fmtCount(n)}+` : fmtCount(n);
  };
  const cards = STATUSES.map((st) =>
    h(
      "a",
      {
        class: `card status-card status-${st.toLowerCase()}`,
        href: `#/sagas?status=${st}`,
        "data-testid": `count-${st}`,
        title: estimated.has(st)
          ? `List ${st} sagas (over ${fmtCount(data.count_cap)}: estimated from the table's statistics)`
          : `List ${st} sagas`,
      },
      h("span", { class: "card-count" }, shown(st)),
      h("span", { class: "card-label" }, st),
    ),
  );
  const totalBacklog = data.outbox.reduce((sum, o) => sum + o.unpublished, 0);
  const totalDead = data.outbox.reduce((sum, o) => sum + o.dead, 0);
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
          totalDead ? h("span", { class: "dead-rows" }, ` · ${fmtCount(totalDead)} given up by the relay`) : "",
        ),
        h(
          "table",
          { class: "compact" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              h("th", {}, "outbox"),
              h("th", { class: "num" }, "unpublished"),
              h("th", { class: "num" }, "oldest"),
              h("th", { class: "num", title: "rows the relay gave up on" }, "dead"),
            ),
          ),
          h(
            "tbody",
            {},
            data.outbox.map((o) =>
              h(
                "tr",
                { class: o.dead ? "bad" : o.unpublished ? "warn" : "" },
                h("td", {}, o.outbox),
                h("td", { class: "num" }, fmtCount(o.unpublished)),
                h("td", { class: "num" }, o.oldest_age_s === null ? "—" : fmtDuration(o.oldest_age_s * 1000)),
                h("td", { class: "num" }, fmtCount(o.dead)),
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
