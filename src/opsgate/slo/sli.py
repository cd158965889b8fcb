"""SLI arithmetic over rollup sums: good/bad counts, histogram shares and percentiles, budgets, burn.

Pure functions over dicts of summed rollup columns (``store/rollups.py``), so they are easy to test
and shared by status, history, reports and the alert evaluator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opsgate.domain.slo_config import LOWER_IS_BETTER, QUALITY_SLIS, SloDefinition
from opsgate.slo import quality
from opsgate.store.rollups import BOUNDS_MS, LATENCY_COLUMNS, TTFT_COLUMNS

Sums = Mapping[str, float]
# Quality SLIs: (bad, total) rollup columns. Injection counts among every request a guard policy
# scanned (blocked ones too); the answer rates among answers (chat/completion answers that came
# back, or that the output guard judged and blocked). See slo/quality.py.
QUALITY_COLUMNS: dict[str, tuple[str, str]] = {
    "injection_rate": (quality.COLUMN_OF[quality.INJECTION], quality.COLUMN_OF[quality.SCANNED]),
    "pii_leak_rate": (quality.COLUMN_OF[quality.PII_LEAK], quality.COLUMN_OF[quality.ANSWERED]),
    "toxicity_rate": (quality.COLUMN_OF[quality.TOXIC], quality.COLUMN_OF[quality.ANSWERED]),
    "low_confidence_rate": (quality.COLUMN_OF[quality.LOW_CONFIDENCE], quality.COLUMN_OF[quality.ANSWERED]),
    "refusal_rate": (quality.COLUMN_OF[quality.REFUSAL], quality.COLUMN_OF[quality.ANSWERED]),
}
assert set(QUALITY_COLUMNS) == QUALITY_SLIS


def share_within(threshold_ms: float, cumulative: Sequence[float], total: float) -> float:
    """How many of ``total`` events took at most ``threshold_ms``, from cumulative bucket counts.

    Between two bounds the count is interpolated linearly (as Prometheus' histogram_quantile does);
    past the last bound, only what is known to be within it counts (conservative).
    """
    if total <= 0:
        return 0.0
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(BOUNDS_MS, cumulative, strict=True):
        if threshold_ms <= bound:
            fraction = (threshold_ms - lower_bound) / (bound - lower_bound)
            return lower_count + fraction * (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_count


def percentile(q: float, cumulative: Sequence[float], total: float) -> float | None:
    """The ``q`` quantile (0..1) in ms, interpolated within its histogram bucket; None without events."""
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(BOUNDS_MS, cumulative, strict=True):
        if count >= rank:
            width = count - lower_count
            fraction = (rank - lower_count) / width if width > 0 else 1.0
            return lower_bound + fraction * (bound - lower_bound)
        lower_bound, lower_count = bound, count
    return float(BOUNDS_MS[-1])  # beyond the last bound: report the bound (a floor)


def ok_requests(sums: Sums) -> float:
    """Requests that succeeded (status < 400): the latency histogram's population."""
    return sums.get("requests", 0) - sums.get("errors", 0) - sums.get("client_errors", 0)


def bad_and_total(definition: SloDefinition, sums: Sums) -> tuple[float, float]:
    """Bad events and all eligible events of a ratio SLI over ``sums``.

    Availability and error rate count server failures (5xx) among requests that were not the
    client's mistake (4xx), so a client sending bad requests cannot burn the gateway's budget.
    """
    sli = definition.sli
    if sli in ("availability", "error_rate"):
        total = sums.get("requests", 0) - sums.get("client_errors", 0)
        return sums.get("errors", 0), total
    if sli == "latency":
        total = ok_requests(sums)
        good = share_within(definition.threshold_ms or 0, [sums.get(c, 0) for c in LATENCY_COLUMNS], total)
        return total - good, total
    if sli == "ttft":
        total = sums.get("ttft_count", 0)
        good = share_within(definition.threshold_ms or 0, [sums.get(c, 0) for c in TTFT_COLUMNS], total)
        return total - good, total
    if sli == "csat":
        total = sums.get("feedback", 0)
        return total - sums.get("positive", 0), total
    if sli in QUALITY_COLUMNS:
        bad_column, total_column = QUALITY_COLUMNS[sli]
        return sums.get(bad_column, 0), sums.get(total_column, 0)
    raise ValueError(f"{sli} is not a ratio SLI")


def ratio_value(definition: SloDefinition, bad: float, total: float) -> float | None:
    """The SLI as reported: the good share, or the bad share for error_rate and the quality rates;
    None without events."""
    if total <= 0:
        return None
    bad_share = bad / total
    return bad_share if definition.sli in LOWER_IS_BETTER else 1.0 - bad_share


def burn_rate(definition: SloDefinition, bad: float, total: float) -> float:
    """How fast the budget burns: the bad share over the allowed share (1.0 spends it exactly in the window)."""
    if total <= 0:
        return 0.0
    allowed = definition.allowed_bad
    if allowed <= 0:
        return float("inf") if bad > 0 else 0.0
    return (bad / total) / allowed


def budget_remaining(definition: SloDefinition, bad: float, total: float) -> float:
    """The share of the window's error budget left (1 = untouched, 0 = spent, below 0 = overspent)."""
    return 1.0 - burn_rate(definition, bad, total)


def meets(definition: SloDefinition, value: float | None, threshold: float) -> bool | None:
    """Whether ``value`` meets ``threshold`` in the SLI's direction; None without a value."""
    if value is None:
        return None
    return value <= threshold if definition.sli in LOWER_IS_BETTER else value >= threshold
