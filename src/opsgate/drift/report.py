"""A drift check result as a report: Markdown for terminals and tickets, one self-contained HTML page with plots.

Both renderers read the result dict of ``drift-spec`` defensively: any key may be missing, numbers may be
NaN, None or strings, and every text came from traffic (a category is whatever a prompt held), so text is
cleaned of control characters, shortened, and escaped for the output format (Jinja2 autoescape for HTML,
backslash escapes for Markdown). Plots are PNGs from matplotlib's object API (no pyplot global state, so
rendering is safe in a worker thread), inlined as ``data:`` URIs: the page loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader

TEMPLATES = Path(__file__).resolve().parent.parent / "ui" / "templates"
REPORT_TEMPLATE = "drift_report.html"
TEXT_LIMIT = 300  # a summary longer than this is someone's prompt, not a sentence
LABEL_LIMIT = 60
MAX_CATEGORIES = 12  # bars per categorical plot; the rest are left out (named in the caption)
MAX_FEATURE_PLOTS = 24
MAX_HISTORY_POINTS = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|#!])")


# -- cleaning -------------------------------------------------------------------------------------


def clean_text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """One line of printable text: control characters become spaces, broken Unicode is replaced, long text is cut."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates from a JSON body
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (None, NaN, infinities, text, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return result if math.isfinite(result) else None


def fmt_time(value: Any) -> str:
    """Epoch seconds as ``2026-12-06 04:00 UTC``; "?" for a missing or impossible time."""
    ts = number(value)
    if ts is None:
        return "?"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return "?"


def fmt_p(value: Any) -> str:
    """A p-value people can compare at a glance: 3 digits above 0.001, scientific below."""
    p = number(value)
    if p is None:
        return "—"
    if p == 0:
        return "< 1e-300"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant figures, "—" when there is none."""
    x = number(value)
    return "—" if x is None else f"{x:.{digits}g}"


def _shares(value: Any) -> dict[str, float]:
    """A distribution as {clean label: finite share}; anything that is not a mapping is empty."""
    if not isinstance(value, Mapping):
        return {}
    shares: dict[str, float] = {}
    for key, share in list(value.items())[:1000]:
        x = number(share)
        if x is not None:
            shares[clean_text(key, LABEL_LIMIT) or "(empty)"] = x
    return shares


# -- the view both renderers print --------------------------------------------------------------


@dataclass(frozen=True)
class TestView:
    """One statistical test of a result, cleaned for display."""

    feature: str
    label: str
    side: str
    kind: str
    test: str
    p_adjusted: str
    effect: str
    effect_value: float | None
    effect_name: str
    min_effect: str  # the engine's smallest effect that counts as drift ("" when it did not say)
    drifted: bool
    summary: str
    reference_distribution: dict[str, float]
    current_distribution: dict[str, float]
    reference_stats: dict[str, float]
    current_stats: dict[str, float]


@dataclass(frozen=True)
class WindowView:
    """The reference or current window of a check."""

    name: str
    kind: str
    start: str
    end: str
    requests: str
    embedded: str


@dataclass(frozen=True)
class ResultView:
    """A whole result, cleaned: what the Markdown and the HTML page show."""

    alias: str
    tenant: str
    checked_at: str
    state: str  # "drift" | "ok" | "insufficient"
    verdict: str
    score: str
    alpha: str
    windows: list[WindowView]
    tests: list[TestView]
    moved: list[TestView] = field(default_factory=list)


def _test_view(raw: Mapping[str, Any]) -> TestView:
    effect_value = number(raw.get("effect"))
    return TestView(
        feature=clean_text(raw.get("feature"), LABEL_LIMIT) or "?",
        label=clean_text(raw.get("label") or raw.get("feature"), LABEL_LIMIT) or "?",
        side=clean_text(raw.get("side"), 20),
        kind=clean_text(raw.get("kind"), 20),
        test=clean_text(raw.get("test"), 40),
        p_adjusted=fmt_p(raw.get("p_adjusted", raw.get("p_value"))),
        effect=fmt_number(effect_value),
        effect_value=effect_value,
        effect_name=clean_text(raw.get("effect_name"), LABEL_LIMIT),
        min_effect="" if number(raw.get("min_effect")) is None else fmt_number(raw.get("min_effect")),
        drifted=raw.get("drifted") is True,
        summary=clean_text(raw.get("summary")),
        reference_distribution=_shares(raw.get("reference_distribution")),
        current_distribution=_shares(raw.get("current_distribution")),
        reference_stats=_shares(raw.get("reference_stats")),
        current_stats=_shares(raw.get("current_stats")),
    )


def _window_view(name: str, raw: Any) -> WindowView:
    window: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    count = number(window.get("requests"))
    embedded = number(window.get("embedded"))
    return WindowView(
        name=name,
        kind=clean_text(window.get("kind"), 20),
        start=fmt_time(window.get("start")),
        end=fmt_time(window.get("end")),
        requests="—" if count is None else f"{count:,.0f}",
        embedded="—" if embedded is None else f"{embedded:,.0f}",
    )


def verdict(result: Mapping[str, Any]) -> tuple[str, str]:
    """(state, sentence): "drift detected on smollm2: 3 of 14 features moved", "no drift …", "not enough data: …"."""
    alias = clean_text(result.get("alias"), LABEL_LIMIT) or "?"
    tenant = clean_text(result.get("tenant"), LABEL_LIMIT)
    target = f"{alias} (tenant {tenant})" if tenant else alias
    if result.get("error"):
        return "insufficient", f"check failed on {target}: {clean_text(result.get('error'))}"
    insufficient = result.get("insufficient")
    if insufficient:
        return "insufficient", f"not enough data on {target}: {clean_text(insufficient)}"
    tests = [t for t in _raw_tests(result)]
    features = {clean_text(t.get("feature")) for t in tests}
    moved = {clean_text(t.get("feature")) for t in tests if t.get("drifted") is True}
    counts = f"{len(moved)} of {len(features)} feature{'s' if len(features) != 1 else ''} moved"
    if result.get("drifted") is True:
        return "drift", f"drift detected on {target}: {counts}"
    return "ok", f"no drift on {target}: {counts}"


def _raw_tests(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tests = result.get("tests")
    if not isinstance(tests, list):
        return []
    return [t for t in tests if isinstance(t, Mapping)]


def result_view(result: Mapping[str, Any]) -> ResultView:
    """The cleaned view of ``result`` (tests in the order given; moved features first in ``moved``)."""
    state, sentence = verdict(result)
    tests = [_test_view(t) for t in _raw_tests(result)]
    alpha = number(result.get("alpha"))
    return ResultView(
        alias=clean_text(result.get("alias"), LABEL_LIMIT) or "?",
        tenant=clean_text(result.get("tenant"), LABEL_LIMIT),
        checked_at=fmt_time(result.get("checked_at")),
        state=state,
        verdict=sentence,
        score=fmt_number(result.get("score")),
        alpha="—" if alpha is None else f"{alpha:g}",
        windows=[
            _window_view("reference", result.get("reference")),
            _window_view("current", result.get("current")),
        ],
        tests=tests,
        moved=[t for t in tests if t.drifted],
    )


# -- Markdown -------------------------------------------------------------------------------------


def md_escape(text: str) -> str:
    """Text safe in a Markdown paragraph or table cell: punctuation that would start markup or raw HTML
    (``<script>``), or end a cell (``|``), is backslash-escaped, which CommonMark renders literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def render_markdown(result: dict[str, Any]) -> str:
    """The check as Markdown: verdict, windows, the moved features' sentences, then every test."""
    view = result_view(result)
    title = f"Drift check: {md_escape(view.alias)}" + (f" (tenant {md_escape(view.tenant)})" if view.tenant else "")
    lines = [
        f"# {title}",
        "",
        f"**{md_escape(view.verdict)}**",
        "",
        f"Checked {view.checked_at} · score {view.score} · alpha {view.alpha} (family-wise false-alarm rate)",
        "",
        "| window | kind | from | to | requests | embedded |",
        "|---|---|---|---|---:|---:|",
    ]
    for w in view.windows:
        lines.append(f"| {w.name} | {md_escape(w.kind)} | {w.start} | {w.end} | {w.requests} | {w.embedded} |")
    if view.moved:
        lines += ["", "## What moved", ""]
        for t in view.moved:
            sentence = md_escape(t.summary) or f"effect {t.effect}"
            lines.append(f"- **{md_escape(t.label)}** ({md_escape(t.side)}): {sentence}")
    lines += ["", "## Tests", ""]
    if not view.tests:
        lines.append("No tests ran." if view.state != "insufficient" else "No tests ran: not enough data.")
    else:
        lines += [
            "| feature | side | test | p adjusted | effect | moved | summary |",
            "|---|---|---|---:|---:|---|---|",
        ]
        for t in view.tests:
            notes = [md_escape(t.effect_name)] if t.effect_name else []
            notes += [f"counts from {t.min_effect}"] if t.min_effect else []
            effect = t.effect + (f" ({', '.join(notes)})" if notes else "")
            lines.append(
                f"| {md_escape(t.label)} | {md_escape(t.side)} | {md_escape(t.test)} | {t.p_adjusted} | {effect} | "
                f"{'yes' if t.drifted else ''} | {md_escape(t.summary)} |"
            )
    return "\n".join(lines) + "\n"


# -- plots ----------------------------------------------------------------------------------------


def plot_text(value: str, limit: int) -> str:
    """A label from traffic for a plot: every "$" escaped, so matplotlib never parses it as mathtext (a bad
    "$\\frac{" raises at draw time). Per text, not through rcParams: those are global to every thread."""
    return clean_text(value, limit).replace("$", r"\$")


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # heavy import, paid only when a page is drawn

    return Figure(figsize=(width, height))


def distribution_png(test: TestView) -> str | None:
    """Reference vs current shares as paired horizontal bars (the categories with the largest share)."""
    ref, cur = test.reference_distribution, test.current_distribution
    if not ref and not cur:
        return None
    categories = sorted(set(ref) | set(cur), key=lambda c: -max(ref.get(c, 0.0), cur.get(c, 0.0)))
    shown = categories[:MAX_CATEGORIES][::-1]  # largest at the top
    figure = _figure(5.2, 0.9 + 0.32 * len(shown))
    ax = figure.add_subplot()
    positions = range(len(shown))
    ax.barh([p + 0.2 for p in positions], [ref.get(c, 0.0) for c in shown], 0.4, label="reference", color="#9ca3af")
    ax.barh([p - 0.2 for p in positions], [cur.get(c, 0.0) for c in shown], 0.4, label="current", color="#4f46e5")
    ax.set_yticks(list(positions), [plot_text(c, 24) for c in shown])
    ax.set_xlabel("share" if test.kind != "numeric" else "value")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return _png(figure)


def stats_png(test: TestView) -> str | None:
    """Reference vs current summary statistics (mean, p50, p95, …) as grouped bars."""
    ref, cur = test.reference_stats, test.current_stats
    names = [n for n in dict.fromkeys([*ref, *cur])][:8]
    if not names:
        return None
    figure = _figure(5.2, 2.6)
    ax = figure.add_subplot()
    positions = range(len(names))
    ax.bar([p - 0.2 for p in positions], [ref.get(n, math.nan) for n in names], 0.4, label="reference", color="#9ca3af")
    ax.bar([p + 0.2 for p in positions], [cur.get(n, math.nan) for n in names], 0.4, label="current", color="#4f46e5")
    ax.set_xticks(list(positions), [plot_text(n, 12) for n in names])
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _png(figure)


def history_png(history: Iterable[Mapping[str, Any]]) -> str | None:
    """Score over time with the checks that decided "drift" marked; None with no usable point."""
    points: list[tuple[datetime, float, bool]] = []
    for row in history:
        ts, score = number(row.get("checked_at")), number(row.get("score"))
        if ts is None or row.get("insufficient"):
            continue
        try:
            when = datetime.fromtimestamp(ts, UTC)
        except (OverflowError, OSError, ValueError):
            continue
        points.append((when, score if score is not None else 0.0, row.get("drifted") is True))
    points = sorted(points)[-MAX_HISTORY_POINTS:]
    if not points:
        return None
    figure = _figure(9.0, 2.8)
    ax = figure.add_subplot()
    ax.plot([p[0] for p in points], [p[1] for p in points], color="#4f46e5", marker="o", markersize=3, label="score")
    drifted = [p for p in points if p[2]]
    if drifted:
        ax.scatter([p[0] for p in drifted], [p[1] for p in drifted], color="#dc2626", zorder=3, label="drift detected")
    if len(points) == 1:  # matplotlib would spread one date over years
        ax.set_xlim(points[0][0] - timedelta(hours=1), points[0][0] + timedelta(hours=1))
    ax.set_ylim(0, max(1.0, max(p[1] for p in points) * 1.1))
    ax.set_ylabel("drift score")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    figure.autofmt_xdate()
    return _png(figure)


@dataclass(frozen=True)
class FeaturePlot:
    """One feature's picture in the HTML report."""

    test: TestView
    png: str


def feature_plots(tests: list[TestView]) -> list[FeaturePlot]:
    """Plots for the tests that carry something to draw, moved features first, at most MAX_FEATURE_PLOTS."""
    plots: list[FeaturePlot] = []
    for test in sorted(tests, key=lambda t: not t.drifted):  # stable: keeps the given order within each group
        if len(plots) >= MAX_FEATURE_PLOTS:
            break
        if test.kind == "embedding":
            continue  # its only "stats" are sample counts: the table's sentence says more than a bar would
        png = (stats_png(test) if test.kind == "numeric" else None) or distribution_png(test) or stats_png(test)
        if png:
            plots.append(FeaturePlot(test, png))
    return plots


# -- HTML -----------------------------------------------------------------------------------------


def _environment() -> Environment:
    # autoescape=True for every template: everything printed came from traffic.
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _same_series(result: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    # A check over every tenant may say tenant None or "" (the store's column value for it).
    return row.get("alias") == result.get("alias") and (row.get("tenant") or None) == (result.get("tenant") or None)


def render_html(result: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """One self-contained page: the Markdown's content plus plots of each feature and of the score over
    ``history`` (the same alias and tenant's checks; others in the list are ignored)."""
    view = result_view(result)
    series = [row for row in history if isinstance(row, Mapping) and _same_series(result, row)]
    if not any(row.get("checked_at") == result.get("checked_at") for row in series):
        series.append(result)  # the check itself is a point of its own history
    history_plot = history_png(series)
    plots = feature_plots(view.tests)
    template = _environment().get_template(REPORT_TEMPLATE)
    return template.render(view=view, history_plot=history_plot, plots=plots, checks=len(series))
