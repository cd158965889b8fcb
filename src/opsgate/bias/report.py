"""The audit as a document: JSON (for machines), Markdown (for a PR comment or a terminal), HTML (for people).

The HTML page is self-contained (inline CSS, the plot as a base64 PNG) so it can be attached to a CI
run as one file; every piece of text in it — prompts, answers, error messages, all of which came from
a model or a file a user wrote — is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opsgate.bias.metrics import METRICS

if TYPE_CHECKING:  # scipy, statsmodels and openai load in seconds: not at every `opsgate` start
    from opsgate.bias.analysis import AuditResult, Comparison
    from opsgate.bias.runner import Answer, RunSettings

SCHEMA = "opsgate.bias.report/v1"
FORMATS = ("md", "html", "json")
_UNITS = {
    "refusal": "refusal-rate gap (points)",
    "sentiment": "mean sentiment gap (VADER compound)",
    "toxicity": "mean toxicity gap (probability)",
    "length": "answer length ratio (%)",
}
_COLOURS = {"fail": "#c62828", "pass": "#2e7d32", "inconclusive": "#757575"}


@dataclass(slots=True)
class AuditDocument:
    """What a report is made from: the run's settings, its answers and the analysis."""

    settings: RunSettings
    target: str
    templates_source: str
    templates_name: str
    templates_license: str
    dimensions: dict[str, list[str]]
    samples: int
    seed: int
    started_at: str
    duration_s: float
    result: AuditResult
    answers: list[Answer] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (``SCHEMA``)."""
        return {
            "schema": SCHEMA,
            "run_id": self.settings.run_id,
            "model": self.settings.model,
            "target": self.target,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 2),
            "settings": {
                "max_tokens": self.settings.max_tokens,
                "temperature": self.settings.temperature,
                "concurrency": self.settings.concurrency,
                "retries": self.settings.retries,
                "samples": self.samples,
                "seed": self.seed,
            },
            "templates": {
                "source": self.templates_source,
                "name": self.templates_name,
                "license": self.templates_license,
            },
            "dimensions": self.dimensions,
            **self.result.to_dict(),
            "answers": [answer.to_dict() for answer in self.answers],
        }


def _cell(value: object) -> str:
    # Markdown table cells: a pipe or a newline in an error message would break the table.
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _level(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric == "refusal":
        return f"{value * 100:.0f}%"
    if metric == "length":
        return f"{math.expm1(value):.0f} w geo"  # comparisons hold log(1 + words): a geometric mean
    return f"{value:.3f}"


def _threshold(metric: str, comparison: Comparison) -> str:
    if metric == "length":
        return f"ratio {math.exp(comparison.threshold):.3g} either way"
    if metric == "refusal":
        return f"±{comparison.threshold * 100:.0f} pts"
    return f"±{comparison.threshold:g}"


def _headline(document: AuditDocument) -> tuple[str, list[str]]:
    result = document.result
    verdict = "PASS" if result.passed else "FAIL"
    counts = result.verdict_counts()
    lines = [
        f"model `{document.settings.model}` via {document.target}; templates {document.templates_name} "
        f"({document.templates_license or 'no licence given'}); run {document.settings.run_id}",
        f"{result.requests} requests ({result.blocked} blocked by the guard, {result.errors} errored); "
        f"{counts['pass']} comparisons pass, {counts['fail']} fail, {counts['inconclusive']} inconclusive; "
        f"simultaneous intervals at {result.confidence_level:.4%}",
    ]
    return verdict, lines


def render_markdown(document: AuditDocument) -> str:
    """The report as Markdown."""
    result = document.result
    verdict, lines = _headline(document)
    out = [f"# Bias audit: {verdict}", "", *[f"- {line}" for line in lines], ""]
    if result.failures:
        out += ["## Failures", "", *[f"- {_cell(failure)}" for failure in result.failures], ""]
    for dimension, groups in document.dimensions.items():
        out += [f"## {dimension} ({', '.join(groups)})", ""]
        out += ["| metric | A vs B | pairs | A | B | gap [CI] | threshold | p (Holm) | verdict |"]
        out += ["|---|---|---:|---:|---:|---|---|---:|---|"]
        for c in (c for c in result.comparisons if c.dimension == dimension):
            out.append(
                f"| {c.metric} | {c.group_a} vs {c.group_b} | {c.n_pairs} | {_level(c.metric, c.mean_a)} | "
                f"{_level(c.metric, c.mean_b)} | {_cell(c.describe_gap())} | {_threshold(c.metric, c)} | "
                f"{_fmt(c.p_adjusted)} | {'**FAIL**' if c.verdict == 'fail' else c.verdict} |"
            )
        out += ["", "| group | " + " | ".join(METRICS) + " | errors |", "|---|" + "---:|" * (len(METRICS) + 1)]
        for group in groups:
            cells = []
            for metric in METRICS:
                estimate = next(
                    g for g in result.groups if (g.dimension, g.group, g.metric) == (dimension, group, metric)
                )
                cells.append(f"{_group_value(metric, estimate.estimate)} (n={estimate.n})")
            errors = result.errors_by_group.get(dimension, {}).get(group, 0)
            out.append(f"| {group} | " + " | ".join(cells) + f" | {errors} |")
        out.append("")
    if result.error_samples:
        out += ["## Errors (first distinct messages)", "", *[f"- {_cell(e)[:300]}" for e in result.error_samples]]
        out.append("")
    return "\n".join(out)


def _group_value(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric == "refusal":
        return f"{value * 100:.0f}%"
    if metric == "length":
        return f"{value:.1f} w"
    return f"{value:.3f}"


def _plot_values(comparison: Comparison) -> tuple[float, float, float] | None:
    if comparison.gap is None or comparison.ci_low is None or comparison.ci_high is None:
        return None
    if comparison.metric == "length":
        return tuple(math.expm1(v) * 100 for v in (comparison.gap, comparison.ci_low, comparison.ci_high))  # type: ignore[return-value]
    if comparison.metric == "refusal":
        return comparison.gap * 100, comparison.ci_low * 100, comparison.ci_high * 100
    return comparison.gap, comparison.ci_low, comparison.ci_high


def plot_gaps_png(result: AuditResult) -> bytes:
    """One panel per metric: each comparison's gap with its simultaneous interval, the allowed band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(f"{c.dimension}: {c.group_a} vs {c.group_b}" for c in result.comparisons))
    height = max(2.5, 0.28 * len(labels) + 1.4)
    figure, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), height), sharey=True, squeeze=False)
    for axis, metric in zip(axes[0], METRICS, strict=True):
        rows = [c for c in result.comparisons if c.metric == metric]
        bound = rows[0].threshold if rows else result.thresholds.bound(metric)
        low_band, high_band = (
            (math.expm1(-bound) * 100, math.expm1(bound) * 100)
            if metric == "length"
            else ((-bound * 100, bound * 100) if metric == "refusal" else (-bound, bound))
        )
        axis.axvspan(low_band, high_band, color="#e8f5e9", zorder=0)
        axis.axvline(0, color="#9e9e9e", linewidth=0.8)
        for comparison in rows:
            values = _plot_values(comparison)
            y = labels.index(f"{comparison.dimension}: {comparison.group_a} vs {comparison.group_b}")
            if values is None:
                axis.plot([0], [y], marker="x", color=_COLOURS["inconclusive"])
                continue
            gap, low, high = values
            axis.errorbar(
                gap, y, xerr=[[gap - low], [high - gap]], fmt="o", color=_COLOURS[comparison.verdict], capsize=3
            )
        axis.set_title(_UNITS[metric], fontsize=9)
        axis.set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0][0].invert_yaxis()  # the y axis is shared: inverted once, it reads top-down in audit order
    figure.suptitle("Gaps between groups (A - B) with simultaneous intervals; green band: allowed", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _examples(document: AuditDocument, comparison: Comparison, limit: int = 3) -> list[tuple[Answer, Answer]]:
    by_set: dict[str, dict[str, Answer]] = {}
    for answer in document.answers:
        if answer.dimension == comparison.dimension:
            by_set.setdefault(answer.set_key, {})[answer.group] = answer
    found = []
    for members in by_set.values():
        a, b = members.get(comparison.group_a), members.get(comparison.group_b)
        if a is None or b is None or a.metrics is None or b.metrics is None:
            continue
        x, y = a.metrics.value(comparison.metric), b.metrics.value(comparison.metric)
        if x is not None and y is not None and x != y:
            found.append((abs(x - y), a, b))
    found.sort(key=lambda item: -item[0])
    return [(a, b) for _, a, b in found[:limit]]


def _answer_html(answer: Answer) -> str:
    text = answer.text if answer.outcome == "answered" else f"[{answer.outcome}: {answer.error}]"
    return (
        f"<div class=answer><b>{html.escape(answer.group)}</b>: <i>{html.escape(answer.prompt)}</i>"
        f"<pre>{html.escape(text[:600])}</pre></div>"
    )


def render_html(document: AuditDocument) -> str:
    """The report as one self-contained HTML page (plot embedded, all text escaped)."""
    result = document.result
    verdict, lines = _headline(document)
    plot = base64.b64encode(plot_gaps_png(result)).decode("ascii")
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>Bias audit: {verdict} ({html.escape(document.settings.model)})</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
        ".fail{color:#c62828;font-weight:bold}.pass{color:#2e7d32}.inconclusive{color:#757575}"
        "pre{white-space:pre-wrap;background:#f5f5f5;padding:4px;margin:2px 0}"
        "img{max-width:100%}.answer{margin:4px 0}</style></head><body>",
        f"<h1>Bias audit: <span class={verdict.lower()}>{verdict}</span></h1>",
        "<ul>" + "".join(f"<li>{html.escape(line.replace('`', ''))}</li>" for line in lines) + "</ul>",
    ]
    if result.failures:
        parts.append("<h2>Failures</h2><ul>")
        parts += [f"<li class=fail>{html.escape(failure)}</li>" for failure in result.failures]
        parts.append("</ul>")
    parts.append(f"<img alt='gaps with confidence intervals' src='data:image/png;base64,{plot}'>")
    for dimension, groups in document.dimensions.items():
        parts.append(f"<h2>{html.escape(dimension)} ({html.escape(', '.join(groups))})</h2><table>")
        parts.append(
            "<tr><th>metric</th><th>A vs B</th><th>pairs</th><th>A</th><th>B</th><th>gap [CI]</th>"
            "<th>threshold</th><th>p (Holm)</th><th>verdict</th></tr>"
        )
        for c in (c for c in result.comparisons if c.dimension == dimension):
            parts.append(
                f"<tr><td>{c.metric}</td><td>{html.escape(c.group_a)} vs {html.escape(c.group_b)}</td>"
                f"<td>{c.n_pairs}</td><td>{_level(c.metric, c.mean_a)}</td><td>{_level(c.metric, c.mean_b)}</td>"
                f"<td>{html.escape(c.describe_gap())}</td><td>{html.escape(_threshold(c.metric, c))}</td>"
                f"<td>{_fmt(c.p_adjusted)}</td><td class={c.verdict}>{c.verdict}</td></tr>"
            )
        parts.append("</table>")
        for c in (c for c in result.comparisons if c.dimension == dimension and c.verdict == "fail"):
            examples = _examples(document, c)
            if examples:
                parts.append(f"<h3>{html.escape(f'{c.metric}: {c.group_a} vs {c.group_b}')}, examples</h3>")
                for a, b in examples:
                    parts.append(_answer_html(a) + _answer_html(b) + "<hr>")
    if result.error_samples:
        parts.append("<h2>Errors</h2><ul>")
        parts += [f"<li>{html.escape(e[:300])}</li>" for e in result.error_samples]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render(document: AuditDocument, fmt: str) -> str:
    """The report in ``fmt`` (``md``, ``html`` or ``json``)."""
    if fmt == "html":
        return render_html(document)
    if fmt == "json":
        import orjson

        return orjson.dumps(document.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    return render_markdown(document)
