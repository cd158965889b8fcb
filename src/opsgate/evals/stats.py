"""Comparing two runs item by item: paired differences, bootstrap intervals, paired tests, the gate.

Per scorer present in both runs, the items scored in both are paired by item key. The mean of the
differences (candidate - baseline) gets a 95% bootstrap interval (``scipy.stats.bootstrap``, BCa,
percentile when BCa cannot be computed); scores are tested with the Wilcoxon signed-rank test
(scipy), pass/fail checks with McNemar's test (statsmodels, exact when fewer than 25 discordant
pairs). The gate judges degradation on the interval's pessimistic end — the low end for a
higher-is-better scorer — relative to the baseline's mean, so a small dataset cannot pass by luck.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALPHA = 0.05


@dataclass
class ScorerComparison:
    """One scorer's paired comparison."""

    scorer: str
    test: str  # wilcoxon | mcnemar
    higher_is_better: bool
    n: int
    baseline_mean: float
    candidate_mean: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str  # better | worse | no significant difference
    words: str
    degradation: float = 0.0  # pessimistic relative degradation (0 when none)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return dict(self.__dict__)


def _bootstrap_ci(diffs: np.ndarray[Any, Any], seed: int) -> tuple[float, float]:
    from scipy import stats

    if len(diffs) < 2 or float(np.ptp(diffs)) == 0.0:
        value = float(diffs.mean()) if len(diffs) else 0.0
        return value, value  # no spread: the interval is the point
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap((diffs,), np.mean, confidence_level=0.95, n_resamples=4000, method="BCa", rng=rng)
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if not (math.isfinite(low) and math.isfinite(high)):
            result = stats.bootstrap(
                (diffs,), np.mean, confidence_level=0.95, n_resamples=4000, method="percentile", rng=rng
            )
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return low, high


def _wilcoxon(diffs: np.ndarray[Any, Any]) -> float:
    from scipy import stats

    if not np.any(diffs != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(diffs, zero_method="wilcox").pvalue)


def _mcnemar(base: list[bool], cand: list[bool]) -> tuple[float, dict[str, int]]:
    from statsmodels.stats.contingency_tables import mcnemar

    table = [[0, 0], [0, 0]]
    for b, c in zip(base, cand, strict=True):
        table[0 if b else 1][0 if c else 1] += 1
    discordant = table[0][1] + table[1][0]
    counts = {"both_pass": table[0][0], "baseline_only": table[0][1], "candidate_only": table[1][0]}
    counts["both_fail"] = table[1][1]
    if discordant == 0:
        return 1.0, counts
    result = mcnemar(table, exact=discordant < 25, correction=True)
    return float(result.pvalue), counts


def compare_scores(
    scorer: str,
    baseline: dict[str, dict[str, Any]],
    candidate: dict[str, dict[str, Any]],
    higher_is_better: bool = True,
    seed: int = 0,
) -> ScorerComparison | None:
    """Compare one scorer's values over the item keys both runs scored; None when none are shared."""
    keys = sorted(k for k in baseline if k in candidate)
    pass_keys = [k for k in keys if baseline[k].get("passed") is not None and candidate[k].get("passed") is not None]
    value_keys = [k for k in keys if baseline[k].get("value") is not None and candidate[k].get("value") is not None]
    if not value_keys:
        return None
    base = np.array([float(baseline[k]["value"]) for k in value_keys])
    cand = np.array([float(candidate[k]["value"]) for k in value_keys])
    diffs = cand - base
    low, high = _bootstrap_ci(diffs, seed)
    details: dict[str, Any] = {}
    if pass_keys and len(pass_keys) == len(value_keys):
        test = "mcnemar"
        p_value, details = _mcnemar(
            [bool(baseline[k]["passed"]) for k in pass_keys], [bool(candidate[k]["passed"]) for k in pass_keys]
        )
    else:
        test = "wilcoxon"
        p_value = _wilcoxon(diffs)
    diff = float(diffs.mean())
    improvement = diff if higher_is_better else -diff
    significant = p_value < ALPHA and (low > 0 or high < 0)
    verdict = "no significant difference"
    if significant:
        verdict = "better" if improvement > 0 else "worse"
    pessimistic = low if higher_is_better else high
    scale = abs(float(base.mean())) or 1.0
    degradation = max(0.0, (-pessimistic if higher_is_better else pessimistic) / scale)
    words = _words(scorer, verdict, diff, low, high, p_value, test, len(value_keys))
    return ScorerComparison(
        scorer=scorer,
        test=test,
        higher_is_better=higher_is_better,
        n=len(value_keys),
        baseline_mean=float(base.mean()),
        candidate_mean=float(cand.mean()),
        diff=diff,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        verdict=verdict,
        words=words,
        degradation=degradation,
        details=details,
    )


def _words(scorer: str, verdict: str, diff: float, low: float, high: float, p: float, test: str, n: int) -> str:
    interval = f"{diff:+.4g} (95% CI {low:+.4g} to {high:+.4g}; {test} p={p:.3g}; n={n})"
    if verdict == "no significant difference":
        return f"{scorer}: no significant difference, {interval}"
    return f"{scorer}: the candidate is significantly {verdict}, {interval}"


@dataclass
class GateResult:
    """The gate's verdict and why."""

    passed: bool
    max_degradation: float
    reasons: list[str]
    comparisons: list[ScorerComparison]
    failure_rates: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {
            "passed": self.passed,
            "max_degradation": self.max_degradation,
            "reasons": self.reasons,
            "failure_rates": self.failure_rates,
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


def gate(
    comparisons: list[ScorerComparison],
    max_degradation: float,
    baseline_failure_rate: float,
    candidate_failure_rate: float,
) -> GateResult:
    """Pass when no scorer's pessimistic degradation and no rise in failed items exceeds the limit."""
    reasons = []
    for comparison in comparisons:
        if comparison.degradation > max_degradation:
            reasons.append(
                f"{comparison.scorer}: may be {comparison.degradation:.1%} worse (pessimistic end of the 95% "
                f"interval) > allowed {max_degradation:.1%}; {comparison.words}"
            )
    if candidate_failure_rate - baseline_failure_rate > max_degradation:
        reasons.append(
            f"failed items: {candidate_failure_rate:.1%} vs baseline {baseline_failure_rate:.1%} "
            f"(more than {max_degradation:.1%} more)"
        )
    if not comparisons:
        reasons.append("no scorer was computed on items both runs share: nothing to judge")
    return GateResult(
        passed=not reasons,
        max_degradation=max_degradation,
        reasons=reasons,
        comparisons=comparisons,
        failure_rates={"baseline": baseline_failure_rate, "candidate": candidate_failure_rate},
    )


def parse_percent(text: str) -> float:
    """``5%`` or ``0.05`` as a fraction; ValueError otherwise."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"'{text}' is not a share like 5% or 0.05") from None
    if not 0 <= value <= 1 or not math.isfinite(value):
        raise ValueError(f"'{text}' must be between 0% and 100%")
    return value
