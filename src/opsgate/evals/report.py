"""The model choice report: quality x cost x latency per run, a Pareto plot, as Markdown, HTML or JSON.

Quality is one scorer's mean (``--quality``, default: the judge if present, else the first scorer
with a higher-is-better direction); cost is the run's total (per item shown too); latency the p50.
A run is on the Pareto front when no other run is at least as good on quality and at least as
cheap (or fast, when costs are unknown) and strictly better on one.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import orjson

from opsgate.evals.analysis import scorer_directions


def pick_quality(runs: list[dict[str, Any]]) -> str | None:
    """The scorer the report ranks by: judge, else the first higher-is-better scorer all runs have."""
    common: set[str] | None = None
    for run in runs:
        names = set(((run.get("summary") or {}).get("scores") or {}).keys())
        common = names if common is None else common & names
    if not common:
        return None
    if "judge" in common:
        return "judge"
    directions = scorer_directions(runs[0])
    for name in sorted(common):
        if directions.get(name, True) and name != "length":
            return name
    return sorted(common)[0]


def report_rows(runs: list[dict[str, Any]], quality: str | None) -> list[dict[str, Any]]:
    """One row per run with quality, cost and latency, and whether it is on the Pareto front."""
    rows = []
    for run in runs:
        summary = run.get("summary") or {}
        items = summary.get("items") or 0
        score = ((summary.get("scores") or {}).get(quality or "") or {}) if quality else {}
        cost = summary.get("cost")
        rows.append(
            {
                "run": run["id"],
                "model": run["model"],
                "dataset": run.get("dataset_id"),
                "items": items,
                "failed": summary.get("failed"),
                "quality_scorer": quality,
                "quality": score.get("mean"),
                "pass_rate": score.get("pass_rate"),
                "cost": cost,
                "cost_per_item": (cost / items) if cost is not None and items else None,
                "latency_p50_ms": (summary.get("latency_ms") or {}).get("p50"),
                "latency_p95_ms": (summary.get("latency_ms") or {}).get("p95"),
                "completion_tokens": summary.get("completion_tokens"),
                "scores": {k: v.get("mean") for k, v in (summary.get("scores") or {}).items()},
            }
        )
    axis = "cost" if all(r["cost"] is not None for r in rows) else "latency_p50_ms"
    for row in rows:
        row["pareto"] = (
            row["quality"] is not None
            and row[axis] is not None
            and not any(
                other is not row
                and other["quality"] is not None
                and other[axis] is not None
                and other["quality"] >= row["quality"]
                and other[axis] <= row[axis]
                and (other["quality"] > row["quality"] or other[axis] < row[axis])
                for other in rows
            )
        )
        row["pareto_axis"] = axis
    return rows


def pareto_png(rows: list[dict[str, Any]]) -> bytes | None:
    """The quality-vs-cost (or latency) scatter with the front marked, as PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    points = [r for r in rows if r["quality"] is not None and r[r["pareto_axis"]] is not None]
    if not points:
        return None
    axis = points[0]["pareto_axis"]
    figure, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for row in points:
        ax.scatter(row[axis], row["quality"], color="tab:green" if row["pareto"] else "tab:gray", s=50)
        ax.annotate(row["model"], (row[axis], row["quality"]), textcoords="offset points", xytext=(5, 5))
    front = sorted((r for r in points if r["pareto"]), key=lambda r: r[axis])
    if len(front) > 1:
        ax.plot([r[axis] for r in front], [r["quality"] for r in front], color="tab:green", linestyle="--")
    ax.set_xlabel("total cost" if axis == "cost" else "latency p50 (ms)")
    ax.set_ylabel(f"quality ({points[0]['quality_scorer']})")
    ax.set_title("Model choice: quality vs " + ("cost" if axis == "cost" else "latency"))
    ax.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


_COLUMNS = (
    ("model", "model"),
    ("run", "run"),
    ("items", "items"),
    ("failed", "failed"),
    ("quality", "quality"),
    ("pass_rate", "pass rate"),
    ("cost", "cost"),
    ("cost_per_item", "cost/item"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p95_ms", "p95 ms"),
    ("pareto", "Pareto"),
)


def render_markdown(rows: list[dict[str, Any]], image_name: str | None = None) -> str:
    """A Markdown table (and the plot's file name when one was written)."""
    quality = rows[0]["quality_scorer"] if rows else None
    axis = rows[0]["pareto_axis"] if rows else "cost"
    lines = [f"# Model choice report\n\nQuality: `{quality}` mean. Pareto front by quality and {axis}.\n"]
    lines.append("| " + " | ".join(title for _, title in _COLUMNS) + " |")
    lines.append("|" + "---|" * len(_COLUMNS))
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[key]) for key, _ in _COLUMNS) + " |")
    if image_name:
        lines.append(f"\n![Pareto plot]({image_name})")
    return "\n".join(lines) + "\n"


def render_html(rows: list[dict[str, Any]], png: bytes | None) -> str:
    """A self-contained HTML page (the plot inline as a data URL)."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in _COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row[key]))}</td>" for key, _ in _COLUMNS) + "</tr>" for row in rows
    )
    image = f'<img alt="Pareto plot" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Model choice report</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px}</style></head><body><h1>Model choice report</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{image}</body></html>"
    )


def render_json(rows: list[dict[str, Any]]) -> bytes:
    """The rows as JSON."""
    return orjson.dumps({"runs": rows}, option=orjson.OPT_INDENT_2)
