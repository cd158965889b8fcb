/* opsgate dashboard: fetches the admin JSON API and draws charts with uPlot. No build step. */
(function () {
  "use strict";

  const COLORS = {
    requests: "#4f46e5", errors: "#dc2626", p50: "#10b981", p95: "#f59e0b", p99: "#ef4444",
    cost: "#0ea5e9", prompt: "#6366f1", completion: "#a855f7", budget: "#15803d", sli: "#4f46e5",
  };
  const REFRESH_MS = 5000;

  // -- small helpers ------------------------------------------------------------------------------

  /** Build an element; children are nodes or strings (always set as text, never parsed as HTML). */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** GET a JSON route of the gateway; {ok, status, data}. 404/501 mean "not available here". */
  async function api(path) {
    try {
      const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 401 || response.status === 403) {
        return { ok: false, status: response.status, data: null };
      }
      const data = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
      return { ok: response.ok, status: response.status, data };
    } catch (error) {
      return { ok: false, status: 0, data: null };
    }
  }

  function unavailable(result, what) {
    if (result.status === 404 || result.status === 501) return `${what} is not available on this gateway yet.`;
    if (result.status === 401 || result.status === 403) return `Your key may not read ${what}.`;
    const message = result.data?.error?.message;
    return `${what} could not be loaded${message ? ": " + message : ` (HTTP ${result.status || "unreachable"})`}.`;
  }

  function showUnavailable(container, text) {
    container.replaceChildren(h("p", { class: "unavailable-box", "data-unavailable": "", text }));
  }

  const toSec = (ts) => (typeof ts === "number" ? (ts > 1e12 ? ts / 1000 : ts) : Date.parse(ts) / 1000);
  const fmtNum = (v, digits = 0) =>
    v === null || v === undefined || Number.isNaN(v) ? "—" : Number(v).toLocaleString(undefined, { maximumFractionDigits: digits });
  const fmtMs = (v) => (v === null || v === undefined ? "—" : v >= 10000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);
  const fmtCost = (v) => (v === null || v === undefined ? "—" : v < 0.01 ? `$${v.toFixed(5)}` : `$${v.toFixed(2)}`);
  const fmtPct = (v, digits = 2) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(digits)}%`);
  const fmtTime = (sec) => new Date(sec * 1000).toLocaleString();

  // -- charts -------------------------------------------------------------------------------------

  const charts = new Map();
  // Charts follow their card's width (window resizes, grid reflows).
  const resizer = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const existing = charts.get(entry.target);
      const width = Math.max(240, Math.floor(entry.contentRect.width));
      if (existing && existing.plot.width !== width) existing.plot.setSize({ width, height: existing.plot.height });
    }
  });

  /**
   * A y axis as wide as its widest tick label ("1000 ms", "$0.0005"), so no label is cut at the edge;
   * uPlot calls it while laying out, with the labels it is about to draw.
   */
  function axisSize(self, values, axisIdx, cycleNum) {
    const axis = self.axes[axisIdx];
    self.ctx.font = axis.font[0];
    const widest = Math.max(0, ...(values || []).filter((v) => v != null).map((v) => self.ctx.measureText(String(v)).width));
    const size = Math.ceil(axis.ticks.size + axis.gap + widest / devicePixelRatio) + 2;
    // Later layout passes (new labels for the new width) may only widen the axis: the layout settles.
    return cycleNum > 1 ? Math.max(size, axis._size || 0) : size;
  }

  /**
   * Draw (or update) a uPlot chart in `el`. `data` is [xs, ...ys]; `series` describes each y.
   * The container gets data-points (non-null y values) so tests and people can tell it has data.
   */
  function chart(el, data, series, opts = {}) {
    if (!el) return;
    const points = data.slice(1).reduce((n, ys) => n + ys.filter((v) => v !== null && v !== undefined).length, 0);
    el.dataset.points = String(points);
    el.querySelector(".unavailable")?.remove();
    const key = el.id + "|" + series.map((s) => s.label).join(",");
    const existing = charts.get(el);
    if (existing && existing.key === key) {
      existing.plot.setData(data);
      return;
    }
    if (existing) existing.plot.destroy();
    const width = Math.max(240, el.clientWidth || 600);
    const plot = new uPlot(
      {
        width,
        height: opts.height || 220,
        cursor: { points: { size: 6 }, drag: { x: false, y: false } },
        legend: { show: opts.legend !== false, live: true },
        scales: {
          // One x value alone would make uPlot span years around it; give it an hour either side.
          x: { time: opts.time !== false, range: opts.xRange || ((u, min, max) => (min === max ? [min - 3600, max + 3600] : [min, max])) },
          y: { range: opts.yRange || ((u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1]) },
          right: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
        },
        axes: [
          { stroke: "#6b7280", grid: { stroke: "#f0f2f5", show: opts.time !== false }, ticks: { stroke: "#e4e7ec" }, values: opts.xValues, splits: opts.xSplits },
          { stroke: "#6b7280", grid: { stroke: "#f0f2f5" }, ticks: { stroke: "#e4e7ec" }, size: axisSize, values: opts.yValues },
          ...(series.some((s) => s.scale === "right")
            ? [{ scale: "right", side: 1, stroke: "#6b7280", grid: { show: false }, ticks: { stroke: "#e4e7ec" }, size: axisSize }]
            : []),
        ],
        series: [
          { label: opts.xLabel || "time", value: opts.time === false ? (u, v) => v : (u, v) => (v == null ? "—" : fmtTime(v)) },
          ...series.map((s) => ({
            label: s.label,
            scale: s.scale || "y",
            stroke: s.color,
            width: s.bars ? 0 : 2,
            fill: s.fill ?? (s.bars ? s.color + "cc" : s.color + "14"),
            paths: s.bars ? uPlot.paths.bars({ size: [0.6, 80] }) : undefined,
            spanGaps: true,
            // A line needs two points: where a series has few values (quiet traffic), draw them as dots.
            points: { size: 6, show: (u, si) => u.data[si].filter((v) => v != null).length <= 12 && !s.bars },
            value: s.value || ((u, v) => (v == null ? "—" : fmtNum(v, 2))),
          })),
        ],
      },
      data,
      el,
    );
    charts.set(el, { key, plot });
    el.uplot = plot; // for the browser tests, which check the drawn axes
    resizer.observe(el);
  }

  function chartUnavailable(el, text) {
    if (!el) return;
    const existing = charts.get(el);
    if (existing) {
      existing.plot.destroy();
      charts.delete(el);
      delete el.uplot;
    }
    el.dataset.points = "0";
    el.replaceChildren(h("div", { class: "unavailable", "data-unavailable": "", text }));
  }


  /** Category bars as a uPlot chart over index positions, one labelled tick per bar. */
  function barChart(el, labels, values, label, color) {
    const n = labels.length;
    const chars = Math.max(10, Math.floor((el.clientWidth || 600) / Math.max(n, 1) / 7));
    chart(el, [labels.map((_, i) => i), values], [{ label, color, bars: true }], {
      time: false,
      legend: false,
      xRange: () => [-0.5, n - 0.5],
      xSplits: () => labels.map((_, i) => i),
      xValues: (u, ticks) => ticks.map((t) => (labels[t] !== undefined ? shorten(labels[t], chars) : "")),
      yValues: (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? fmtNum(t) : "")), // counts: whole numbers
    });
  }

  const shorten = (text, n) => (text.length > n ? text.slice(0, n - 1) + "…" : text);

  /** A tiny inline SVG sparkline (for trends inside table rows). */
  function sparkline(values, color = COLORS.errors) {
    const width = 120, height = 28;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("class", "spark");
    if (!values || !values.length) return svg;
    const max = Math.max(1, ...values);
    const step = values.length > 1 ? width / (values.length - 1) : width;
    const d = values.map((v, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${(height - 2 - ((v || 0) / max) * (height - 4)).toFixed(1)}`).join("");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", d);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", color);
    path.setAttribute("stroke-width", "1.5");
    svg.append(path);
    return svg;
  }

  // -- header: readiness --------------------------------------------------------------------------

  async function health() {
    const badge = document.getElementById("health");
    if (!badge) return;
    const result = await api("/readyz");
    const status = result.data?.status || (result.status ? "not_ready" : "unreachable");
    badge.textContent = status.replace("_", " ");
    badge.className = "health " + status;
  }

  // -- overview -----------------------------------------------------------------------------------

  function setTile(name, text) {
    const node = document.querySelector(`[data-tile="${name}"]`);
    if (node) node.textContent = text;
  }

  async function loadOverview() {
    const [since, step] = document.getElementById("window").value.split("|");
    const note = document.getElementById("source-note");
    // Every number comes from the server (one definition of an error, real window percentiles):
    // the browser only draws them, so no window can disagree with the admin API.
    const stats = await api(`/admin/stats/timeseries?since=${since}&step=${step}`);
    if (!stats.ok || !Array.isArray(stats.data?.data) || !stats.data.summary) {
      for (const id of ["chart-traffic", "chart-latency", "chart-cost", "chart-tokens"]) {
        chartUnavailable(document.getElementById(id), unavailable(stats, "Traffic data"));
      }
      return;
    }
    note.classList.add("hidden");
    const rows = stats.data.data;
    const summary = stats.data.summary;
    const xs = rows.map((r) => toSec(r.ts));
    const col = (name) => rows.map((r) => (r[name] === undefined ? null : r[name]));
    chart(document.getElementById("chart-traffic"), [xs, col("requests"), col("errors")], [
      { label: "requests", color: COLORS.requests, bars: true, value: (u, v) => fmtNum(v) },
      { label: "errors", color: COLORS.errors, fill: COLORS.errors + "33", value: (u, v) => fmtNum(v) },
    ]);
    const ms = (u, v) => fmtMs(v);
    chart(document.getElementById("chart-latency"), [xs, col("p50_ms"), col("p95_ms"), col("p99_ms")], [
      { label: "p50", color: COLORS.p50, value: ms, fill: "transparent" },
      { label: "p95", color: COLORS.p95, value: ms, fill: "transparent" },
      { label: "p99", color: COLORS.p99, value: ms, fill: "transparent" },
    ], { yValues: (u, ticks) => ticks.map(fmtMs) });
    chart(document.getElementById("chart-cost"), [xs, col("cost")], [
      { label: "cost", color: COLORS.cost, value: (u, v) => fmtCost(v) },
    ], { yValues: (u, ticks) => ticks.map((t) => "$" + Number(t.toPrecision(3))) });
    chart(document.getElementById("chart-tokens"), [xs, col("prompt_tokens"), col("completion_tokens")], [
      { label: "prompt", color: COLORS.prompt, value: (u, v) => fmtNum(v) },
      { label: "completion", color: COLORS.completion, value: (u, v) => fmtNum(v) },
    ]);

    const requests = summary.requests;
    setTile("requests", fmtNum(requests));
    setTile("rate", `${fmtNum(summary.requests_per_minute, 2)} / min`);
    setTile("error_rate", fmtPct(summary.error_rate));
    setTile("errors", `${fmtNum(summary.errors)} errors (5xx) · ${fmtNum(summary.client_errors)} client (4xx)`);
    setTile("p95", fmtMs(summary.p95_ms));
    setTile("p50", `p50 ${fmtMs(summary.p50_ms)} · p99 ${fmtMs(summary.p99_ms)}`);
    const cost = summary.cost;
    setTile("cost", fmtCost(cost));
    setTile("cost_per", summary.cost_per_request === null ? "" : `${fmtCost(summary.cost_per_request)} / request`);
    const prompt = summary.prompt_tokens, completion = summary.completion_tokens;
    setTile("tokens", fmtNum(summary.tokens));
    setTile("tokens_split", `${fmtNum(prompt)} in · ${fmtNum(completion)} out`);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  async function loadDeployments() {
    const body = document.querySelector("#deployments tbody");
    const result = await api("/admin/deployments");
    if (!result.ok) return body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "muted", text: unavailable(result, "Deployments") })));
    body.replaceChildren(
      ...result.data.data.map((d) => {
        const state = d.breaker?.state || "—";
        return h("tr", {},
          h("td", {}, h("div", { text: d.deployment }), h("div", { class: "muted small", text: d.alias || "" })),
          h("td", {}, h("span", { class: "badge " + (state === "closed" ? "ok" : state === "open" ? "bad" : "warn"), text: state })),
          h("td", { class: "num", text: `${d.in_flight ?? 0}${d.waiting ? ` (+${d.waiting} waiting)` : ""}` }),
          h("td", {}, h("span", { class: "badge " + (d.healthy === false ? "bad" : "ok"), text: d.healthy === false ? "failing" : "ok" })),
        );
      }),
    );
  }

  async function loadUsage() {
    const body = document.querySelector("#usage tbody");
    // The daily rollup from the start of today (UTC): since=1d would also take in all of yesterday.
    const today = new Date().toISOString().slice(0, 10);
    const result = await api(`/admin/usage?by=model&since=${today}`);
    if (!result.ok) return body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted", text: unavailable(result, "Usage") })));
    if (!result.data.data.length) return body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted", text: "No requests today." })));
    body.replaceChildren(
      ...result.data.data.map((u) =>
        h("tr", {},
          u.model
            ? h("td", { text: u.model })
            : h("td", { class: "muted", text: "(none)", title: "Requests refused before a model was read (no or unreadable body)" }),
          h("td", { class: "num", text: fmtNum(u.requests) }),
          h("td", { class: "num", text: fmtNum(u.errors) }),
          h("td", { class: "num", text: fmtNum(u.prompt_tokens + u.completion_tokens) }),
          h("td", { class: "num", text: fmtCost(u.cost) }),
        ),
      ),
    );
  }

  function overview() {
    const refresh = () => Promise.all([loadOverview(), loadDeployments(), loadUsage(), health()]);
    refresh();
    document.getElementById("window").addEventListener("change", refresh);
    // Live: poll every few seconds while the tab is visible, so a running load moves the charts.
    setInterval(() => {
      if (document.getElementById("live").checked && !document.hidden) refresh();
    }, REFRESH_MS);
  }

  // -- SLOs ---------------------------------------------------------------------------------------

  const STATE_BADGE = { ok: "ok", ticket: "warn", page: "bad" };

  async function loadSlos() {
    const container = document.getElementById("slos");
    const since = document.getElementById("slo-window").value;
    const result = await api("/admin/slo");
    if (!result.ok) return showUnavailable(container, unavailable(result, "The SLO engine"));
    const slos = result.data.data || [];
    if (!slos.length) return showUnavailable(container, "No SLOs are defined (slo: in the config).");
    container.replaceChildren(
      ...slos.map((slo, i) => {
        const budget = slo.budget_remaining;
        const pct = budget == null ? 0 : Math.max(0, Math.min(1, budget));
        const chartEl = h("div", { class: "chart", id: `chart-slo-${i}` });
        const burns = Object.entries(slo.burn_rates || {}).map(([w, v]) =>
          h("span", { class: v != null && v > 1 ? "hot" : "", title: `burn rate over ${w}`, text: `${w} ${v == null ? "—" : Number(v).toFixed(2)}×` }),
        );
        const card = h("section", { class: "card slo-card", "data-slo": slo.name },
          h("div", { class: "slo-head" },
            h("h3", { text: slo.name }),
            h("span", { class: "badge " + (STATE_BADGE[slo.state] || ""), text: slo.state || "?" }),
          ),
          h("div", { class: "muted small slo-meta", text: [slo.sli, slo.window, slo.kpi && `KPI: ${slo.kpi}`, slaText(slo.sla)].filter(Boolean).join(" · ") }),
          h("div", { class: "slo-nums" },
            h("div", {}, h("div", { class: "label", text: "Target" }), h("div", { class: "v", "data-value": "target", text: fmtTarget(slo.target) })),
            h("div", {}, h("div", { class: "label", text: "Current" }), h("div", { class: "v", "data-value": "current", text: fmtTarget(slo.current) })),
            h("div", {}, h("div", { class: "label", text: "Budget left" }), h("div", { class: "v", "data-value": "budget", text: budget == null ? "—" : fmtPct(budget, 1) })),
          ),
          h("div", { class: "budget" + (pct <= 0 ? " out" : pct < 0.25 ? " low" : "") }, h("span", { style: `width:${(pct * 100).toFixed(1)}%` })),
          h("div", { class: "burns" }, burns),
          chartEl,
        );
        return card;
      }),
    );
    await Promise.all(
      slos.map(async (slo, i) => {
        const el = document.getElementById(`chart-slo-${i}`);
        const history = await api(`/admin/slo/${encodeURIComponent(slo.name)}/history?since=${since}`);
        if (!history.ok) return chartUnavailable(el, unavailable(history, "Budget history"));
        const rows = history.data.data || [];
        if (!rows.length) return chartUnavailable(el, "No history yet.");
        chart(el, [rows.map((r) => toSec(r.ts)), rows.map((r) => r.budget_remaining), rows.map((r) => r.sli)], [
          { label: "budget left", color: COLORS.budget, value: (u, v) => (v == null ? "—" : fmtPct(v, 1)) },
          { label: "SLI", color: COLORS.sli, fill: "transparent", value: (u, v) => (v == null ? "—" : fmtTarget(v)) },
        ], { height: 180, yValues: (u, ticks) => ticks.map((t) => `${Math.round(t * 100)}%`) });
      }),
    );
  }

  /** The API's ``sla`` ({threshold, met}) in words: "SLA 95.0% (met)". */
  function slaText(sla) {
    if (!sla) return null;
    const verdict = sla.met === true ? "met" : sla.met === false ? "missed" : "no data";
    return `SLA ${fmtTarget(sla.threshold)} (${verdict})`;
  }

  function fmtTarget(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v !== "number") return String(v);
    return v <= 1 ? fmtPct(v, v >= 0.99 ? 2 : 1) : fmtNum(v, 2);
  }

  async function loadAlerts() {
    const container = document.getElementById("alerts");
    const result = await api("/admin/alerts");
    if (!result.ok) return showUnavailable(container, unavailable(result, "Alerting"));
    const alerts = result.data.data || [];
    if (!alerts.length) return container.replaceChildren(h("p", { class: "muted", text: "No alerts." }));
    container.replaceChildren(
      h("table", { class: "table" },
        h("thead", {}, h("tr", {}, ["SLO", "Severity", "State", "Since", "Resolved"].map((t) => h("th", { text: t })))),
        h("tbody", {},
          alerts.map((a) =>
            h("tr", {},
              h("td", { text: a.slo }),
              h("td", {}, h("span", { class: "badge " + (a.severity === "page" ? "bad" : "warn"), text: a.severity })),
              h("td", {}, h("span", { class: "badge " + (a.state === "firing" ? "bad" : "ok"), text: a.state })),
              h("td", { text: a.since ? fmtTime(toSec(a.since)) : "" }),
              h("td", { text: a.resolved_at ? fmtTime(toSec(a.resolved_at)) : "" }),
            ),
          ),
        ),
      ),
    );
  }

  function slo() {
    const refresh = () => Promise.all([loadSlos(), loadAlerts(), health()]);
    refresh();
    document.getElementById("slo-window").addEventListener("change", refresh);
    setInterval(() => !document.hidden && refresh(), REFRESH_MS * 6);
  }

  // -- error groups -------------------------------------------------------------------------------

  async function loadErrors() {
    const container = document.getElementById("error-groups");
    const chartEl = document.getElementById("chart-errors");
    const since = document.getElementById("errors-window").value;
    const result = await api(`/admin/errors?since=${since}`);
    if (!result.ok) {
      const text = unavailable(result, "Error grouping");
      chartUnavailable(chartEl, text);
      return container.replaceChildren(
        h("p", { class: "unavailable-box", "data-unavailable": "" }, text + " ",
          h("a", { href: `/ui/requests?status=error&since=${since}`, text: "See failed requests in the log" }), "."),
      );
    }
    const groups = result.data.data || [];
    if (!groups.length) {
      chartUnavailable(chartEl, "No errors in this window.");
      return container.replaceChildren(h("p", { class: "muted empty", text: "No errors in this window." }));
    }
    const top = groups.slice(0, 10);
    barChart(chartEl, top.map((g) => g.error_type + " · " + (g.deployment || "")), top.map((g) => g.count), "errors", COLORS.errors);
    container.replaceChildren(
      h("table", { class: "table" },
        h("thead", {}, h("tr", {}, ["Signature", "Deployment", "Count", "Trend", "First seen", "Last seen", "Examples"].map((t) => h("th", { text: t })))),
        h("tbody", {},
          groups.map((g) =>
            h("tr", { "data-signature": g.signature },
              h("td", {}, h("div", {}, h("span", { class: "badge bad", text: g.error_type })), h("div", { class: "small", text: g.message })),
              h("td", { text: g.deployment || "—" }),
              h("td", { class: "num", text: fmtNum(g.count) }),
              h("td", {}, sparkline(g.trend)),
              h("td", { class: "nowrap", text: g.first_seen ? fmtTime(toSec(g.first_seen)) : "" }),
              h("td", { class: "nowrap", text: g.last_seen ? fmtTime(toSec(g.last_seen)) : "" }),
              h("td", {}, (g.examples || []).slice(0, 3).map((id) => h("div", {}, h("a", { class: "mono small", href: `/ui/requests/${encodeURIComponent(id)}`, text: id })))),
            ),
          ),
        ),
      ),
    );
  }

  function errors() {
    loadErrors();
    health();
    document.getElementById("errors-window").addEventListener("change", loadErrors);
  }

  // -- feedback -----------------------------------------------------------------------------------

  // Every number here is the server's (/admin/feedback/summary): counts, CSAT and NPS per row and overall.
  function feedbackTable(container, rows, key) {
    if (!rows.length) return container.replaceChildren(h("p", { class: "muted", text: "No feedback yet." }));
    container.replaceChildren(
      h("table", { class: "table" },
        h("thead", {}, h("tr", {}, h("th", { text: key }), h("th", { class: "num", text: "Responses" }), h("th", { class: "num", text: "CSAT" }), h("th", { class: "num", text: "NPS" }))),
        h("tbody", {},
          rows.map((r) =>
            h("tr", {},
              h("td", { text: r[key] || "(none)" }),
              h("td", { class: "num", text: fmtNum(r.feedback) }),
              h("td", { class: "num", text: fmtPct(r.csat, 1) }),
              h("td", { class: "num", text: r.nps == null ? "—" : fmtNum(r.nps, 1) }),
            ),
          ),
        ),
      ),
    );
  }

  async function loadFeedback() {
    const since = document.getElementById("feedback-window").value;
    const [byDay, byModel, byTenant] = await Promise.all(
      ["day", "model", "tenant"].map((by) => api(`/admin/feedback/summary?by=${by}&since=${since}`)),
    );
    const chartEl = document.getElementById("chart-csat");
    const tiles = document.getElementById("feedback-tiles");
    if (!byDay.ok) {
      const text = unavailable(byDay, "Feedback");
      chartUnavailable(chartEl, text);
      tiles.replaceChildren();
      showUnavailable(document.getElementById("feedback-model"), text);
      showUnavailable(document.getElementById("feedback-tenant"), text);
      return;
    }
    const days = byDay.data.data || [];
    if (days.length) {
      const now = Date.now() / 1000;
      const windowSeconds = { "7d": 7, "30d": 30, "90d": 90 }[since] * 86400;
      chart(chartEl, [days.map((d) => toSec(d.day)), days.map((d) => d.csat), days.map((d) => d.feedback)], [
        { label: "CSAT", color: COLORS.budget, value: (u, v) => fmtPct(v, 1) },
        { label: "responses", color: COLORS.requests, bars: true, scale: "right", fill: COLORS.requests + "55", value: (u, v) => fmtNum(v) },
      ], {
        xRange: () => [now - windowSeconds, now],
        yRange: () => [0, 1],
        yValues: (u, ticks) => ticks.map((t) => `${Math.round(t * 100)}%`),
      });
    } else {
      chartUnavailable(chartEl, "No feedback in this window.");
    }
    const overall = byDay.data.overall || {};
    tiles.replaceChildren(
      h("div", { class: "tile" }, h("div", { class: "label", text: "Responses" }), h("div", { class: "value", "data-value": "responses", text: fmtNum(overall.feedback) })),
      h("div", { class: "tile" }, h("div", { class: "label", text: "CSAT" }), h("div", { class: "value", "data-value": "csat", text: fmtPct(overall.csat, 1) }), h("div", { class: "sub", text: "share of positive answers" })),
      h("div", { class: "tile" }, h("div", { class: "label", text: "NPS" }), h("div", { class: "value", "data-value": "nps", text: overall.nps == null ? "—" : fmtNum(overall.nps, 1) })),
    );
    for (const [result, key, id] of [[byModel, "model", "feedback-model"], [byTenant, "tenant", "feedback-tenant"]]) {
      const container = document.getElementById(id);
      if (!result.ok) showUnavailable(container, unavailable(result, "Feedback"));
      else feedbackTable(container, result.data.data || [], key);
    }
  }

  function feedback() {
    loadFeedback();
    health();
    document.getElementById("feedback-window").addEventListener("change", loadFeedback);
  }

  // -- guard (data rendered into the page by the server) ------------------------------------------

  function guard() {
    health();
    const data = document.getElementById("guard-data");
    if (!data) return;
    const parsed = JSON.parse(data.textContent);
    chart(document.getElementById("chart-guard-time"), parsed.timeline, [
      { label: "events", color: COLORS.p95, bars: true, value: (u, v) => fmtNum(v) },
    ]);
    const scannerEl = document.getElementById("chart-guard-scanner");
    if (parsed.scanners.length) {
      barChart(scannerEl, parsed.scanners.map((s) => s[0]), parsed.scanners.map((s) => s[1]), "events", COLORS.errors);
    } else {
      chartUnavailable(scannerEl, "No events.");
    }
  }

  // -- request log --------------------------------------------------------------------------------

  function requests() {
    health();
    for (const row of document.querySelectorAll("tr[data-href]")) {
      row.addEventListener("click", (event) => {
        if (event.target.closest("a")) return;
        window.location.href = row.dataset.href;
      });
    }
  }

  // -- start --------------------------------------------------------------------------------------

  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
  const pages = { overview, slo, errors, feedback, guard, requests };
  const page = document.body.dataset.page;
  if (pages[page]) pages[page]();
  else if (page !== "login") health();
})();
