/* opsgate dashboard, /ui/drift: draws each series' drift score over time (uPlot) from the JSON the server
   rendered into #drift-data. Checks that decided "drift" are red points on the score line. */
(function () {
  "use strict";

  const data = document.getElementById("drift-data");
  if (!data || typeof uPlot === "undefined") return;
  const fmtTime = (sec) => new Date(sec * 1000).toLocaleString();
  const fmtScore = (u, v) => (v === null || v === undefined ? "—" : Number(v).toFixed(3));
  const plots = [];

  for (const series of JSON.parse(data.textContent)) {
    const el = document.getElementById(series.id);
    if (!el) continue;
    const points = series.score.filter((v) => v !== null).length;
    el.dataset.points = String(points);
    if (!series.x.length) {
      el.textContent = "No checks in this window.";
      continue;
    }
    const lo = Math.min(...series.x), hi = Math.max(...series.x);
    const plot = new uPlot(
      {
        width: Math.max(240, el.clientWidth || 600),
        height: 200,
        cursor: { points: { size: 6 }, drag: { x: false, y: false } },
        scales: {
          // From the data itself (one check alone would make uPlot span years): an hour either side of one point.
          x: { time: true, range: () => (lo === hi ? [lo - 3600, hi + 3600] : [lo, hi]) },
          y: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.1)] },
        },
        axes: [
          { stroke: "#6b7280", grid: { stroke: "#f0f2f5" }, ticks: { stroke: "#e4e7ec" } },
          { stroke: "#6b7280", grid: { stroke: "#f0f2f5" }, ticks: { stroke: "#e4e7ec" }, size: 50 },
        ],
        series: [
          { label: "checked", value: (u, v) => (v == null ? "—" : fmtTime(v)) },
          { label: "score", stroke: "#4f46e5", width: 2, fill: "#4f46e514", spanGaps: true, points: { size: 5, show: true }, value: fmtScore },
          { label: "drift detected", stroke: "#dc2626", fill: "#dc2626", paths: () => null, points: { size: 9, show: true, fill: "#dc2626" }, value: fmtScore },
        ],
      },
      [series.x, series.score, series.drifted],
      el,
    );
    plots.push([el, plot]);
  }

  // Charts follow their container's width (window resizes, grid reflows).
  const resizer = new ResizeObserver(() => {
    for (const [el, plot] of plots) {
      const width = Math.max(240, Math.floor(el.clientWidth));
      if (plot.width !== width) plot.setSize({ width, height: plot.height });
    }
  });
  for (const [el] of plots) resizer.observe(el);
})();
