"""SLO reports in Markdown or HTML, with plots of the SLI and the error budget over time.

Plots are inline SVG drawn here (a polyline per series, the target as a dashed line): no plotting
library in the gateway's dependencies, and the HTML file is self-contained. The Markdown report
shows each history as a Unicode sparkline, and the same SVG plots when written next to a file.
"""

from __future__ import annotations

import html
import math
import time
from datetime import UTC, datetime
from typing import Any

from opsgate.slo.engine import SloEngine

_SPARKS = "▁▂▃▄▅▆▇█"
WIDTH, HEIGHT, PAD = 640, 180, 36


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M")


def sparkline(values: list[float | None]) -> str:
    """A one-line Unicode chart of ``values`` (gaps as spaces)."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low or 1.0
    return "".join(" " if v is None else _SPARKS[int((v - low) / span * (len(_SPARKS) - 1))] for v in values)


def svg_chart(title: str, points: list[tuple[float, float | None]], target: float | None = None) -> str:
    """A small line chart of (ts, value) points as an SVG string, with an optional target line."""
    known = [(t, v) for t, v in points if v is not None and math.isfinite(v)]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff" stroke="#ddd"/>',
        f'<text x="{PAD}" y="16" font-family="sans-serif" font-size="12">{html.escape(title)}</text>',
    ]
    if known:
        values = [v for _, v in known] + ([target] if target is not None else [])
        low, high = min(values), max(values)
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        t0, t1 = known[0][0], known[-1][0]
        t_span = (t1 - t0) or 1.0

        def xy(t: float, v: float) -> str:
            x = PAD + (t - t0) / t_span * (WIDTH - 2 * PAD)
            y = HEIGHT - PAD + (v - low) / (high - low) * (2 * PAD - HEIGHT) + 8
            return f"{x:.1f},{y:.1f}"

        if target is not None:
            parts.append(
                f'<polyline points="{xy(t0, target)} {xy(t1, target)}" stroke="#c33" '
                'stroke-dasharray="4 3" fill="none"/>'
            )
        parts.append(
            f'<polyline points="{" ".join(xy(t, v) for t, v in known)}" stroke="#36c" stroke-width="1.5" fill="none"/>'
        )
        for y, label in ((HEIGHT - PAD + 8, _fmt(low)), (2 * PAD - 8 + 8, _fmt(high))):
            parts.append(f'<text x="2" y="{y}" font-family="sans-serif" font-size="10">{label}</text>')
        parts.append(
            f'<text x="{PAD}" y="{HEIGHT - 6}" font-family="sans-serif" font-size="10">{_when(t0)}</text>'
            f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" text-anchor="end" font-family="sans-serif" '
            f'font-size="10">{_when(t1)}</text>'
        )
    else:
        parts.append(f'<text x="{PAD}" y="{HEIGHT / 2}" font-family="sans-serif" font-size="12">no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def collect(engine: SloEngine, since: float, tenant: str | None = None) -> dict[str, Any]:
    """Status and history of every objective: what a report shows."""
    now = time.time()
    statuses = engine.status(tenant, now)
    histories = {s["name"]: engine.history(s["name"], since, tenant, now) for s in statuses}
    return {"generated_at": now, "since": since, "statuses": statuses, "histories": histories}


def charts(data: dict[str, Any]) -> dict[str, str]:
    """File name → SVG of every plot in the report."""
    out = {}
    for status in data["statuses"]:
        history = data["histories"][status["name"]]
        sli_points = [(p["ts"], p["sli"]) for p in history]
        out[f"{status['name']}-sli.svg"] = svg_chart(f"{status['name']}: {status['sli']}", sli_points, status["target"])
        if status["budget_remaining"] is not None:
            budget = [(p["ts"], p["budget_remaining"]) for p in history]
            out[f"{status['name']}-budget.svg"] = svg_chart(f"{status['name']}: error budget left", budget, 0.0)
    return out


def _rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for s in data["statuses"]:
        burns = ", ".join(f"{w} {_fmt(v, 3)}" for w, v in s["burn_rates"].items() if v is not None)
        sla = s.get("sla") or {}
        rows.append(
            [
                s["name"],
                s["sli"],
                _fmt(s["target"]),
                _fmt(s["current"]),
                _fmt(s["budget_remaining"], 3),
                burns or "-",
                s["state"],
                "-" if not sla else f"{_fmt(sla['threshold'])} ({'met' if sla['met'] else 'missed'})",
                s.get("kpi") or "",
            ]
        )
    return rows


HEADERS = ["SLO", "SLI", "target", "current", "budget left", "burn rates", "state", "SLA", "KPI"]


def markdown(data: dict[str, Any], chart_files: dict[str, str] | None = None) -> str:
    """The report as Markdown; ``chart_files`` (name → relative path) links the SVG plots."""
    lines = [
        "# SLO report",
        "",
        f"From {_when(data['since'])} to {_when(data['generated_at'])} UTC.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(data)]
    for status in data["statuses"]:
        history = data["histories"][status["name"]]
        lines += ["", f"## {status['name']}", ""]
        if status.get("description"):
            lines += [status["description"], ""]
        lines.append(f"SLI over time: `{sparkline([p['sli'] for p in history]) or 'no data'}`")
        if status["budget_remaining"] is not None:
            lines.append(f"Budget left:   `{sparkline([p['budget_remaining'] for p in history]) or 'no data'}`")
        for name, path in (chart_files or {}).items():
            if name.startswith(status["name"] + "-"):
                lines += ["", f"![{name}]({path})"]
    return "\n".join(lines) + "\n"


def html_report(data: dict[str, Any]) -> str:
    """The report as one self-contained HTML page with inline SVG plots."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _rows(data))
    plots = charts(data)
    sections = []
    for status in data["statuses"]:
        svgs = "".join(svg for name, svg in plots.items() if name.startswith(status["name"] + "-"))
        description = f"<p>{e(status['description'])}</p>" if status.get("description") else ""
        sections.append(f"<section><h2>{e(status['name'])}</h2>{description}{svgs}</section>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>SLO report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}svg{display:block;margin:8px 0}"
        "</style></head><body><h1>SLO report</h1>"
        f"<p>From {_when(data['since'])} to {_when(data['generated_at'])} UTC.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{''.join(sections)}</body></html>"
    )
