"""The statistics of experiments: tests and intervals from scipy/statsmodels, plus an always-valid test.

- Rates (error, guard flags, positive feedback): statsmodels' two-proportion z-test and Newcombe's
  interval for the difference.
- Distributions (latency, TTFT, tokens, scores): scipy's Mann-Whitney U and a bootstrap interval for
  the difference of means (or medians).
- Planning: statsmodels' power analysis (Cohen's h) for the fixed-horizon sample size, and the
  horizon the sequential test needs for the same power (by simulation, seeded, a margin added).
- Peeking: the mixture sequential probability ratio test (mSPRT; Johari, Pekelis & Walsh, "Always
  valid inference", 2017) on the difference of two rates with a normal mixing distribution. Its
  p-value is valid at every look, so an operator watching a dashboard, or the rollback watcher
  checking every few seconds, does not inflate false positives. Neither library has it; it is the
  closed form below (the paper's eq. for a normal mixture), vectorised so tests can simulate it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize, proportions_ztest

FloatArray = npt.NDArray[np.float64]
MIN_PER_ARM = 30  # below this the normal approximations behind every test here are not trusted


def proportion_test(x_a: int, n_a: int, x_b: int, n_b: int, alpha: float = 0.05) -> dict[str, Any]:
    """B's rate minus A's, with a two-sided z-test p-value and a (1 - alpha) Newcombe interval."""
    out: dict[str, Any] = {
        "a": {"count": x_a, "n": n_a, "rate": x_a / n_a if n_a else None},
        "b": {"count": x_b, "n": n_b, "rate": x_b / n_b if n_b else None},
        "diff": None,
        "ci": None,
        "p_value": None,
    }
    if n_a == 0 or n_b == 0:
        return out
    out["diff"] = x_b / n_b - x_a / n_a
    if x_a + x_b in (0, n_a + n_b):
        out["p_value"] = 1.0  # both arms all-or-nothing: no evidence of a difference
    else:
        _, p = proportions_ztest([x_b, x_a], [n_b, n_a])
        out["p_value"] = float(p)
    low, high = confint_proportions_2indep(x_b, n_b, x_a, n_a, method="newcomb", compare="diff", alpha=alpha)
    out["ci"] = [float(low), float(high)]
    return out


def distribution_test(
    a: npt.ArrayLike, b: npt.ArrayLike, alpha: float = 0.05, seed: int = 0, statistic: str = "mean"
) -> dict[str, Any]:
    """Mann-Whitney U on B vs A, a bootstrap interval of B's mean (or median) minus A's, and percentiles."""
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    xa, xb = xa[np.isfinite(xa)], xb[np.isfinite(xb)]
    out: dict[str, Any] = {
        "a": _summary(xa),
        "b": _summary(xb),
        "diff": None,
        "ci": None,
        "p_value": None,
        "statistic": statistic,
    }
    if len(xa) < 2 or len(xb) < 2:
        return out
    reduce = np.median if statistic == "median" else np.mean
    out["diff"] = float(reduce(xb) - reduce(xa))
    out["p_value"] = float(sps.mannwhitneyu(xb, xa, alternative="two-sided").pvalue)
    # Resample at most 5,000 of each (the interval's width barely changes beyond that; the cost does).
    rng = np.random.default_rng(seed)
    sa = rng.choice(xa, 5000, replace=False) if len(xa) > 5000 else xa
    sb = rng.choice(xb, 5000, replace=False) if len(xb) > 5000 else xb

    def diff(y: FloatArray, x: FloatArray, axis: int = -1) -> Any:
        return reduce(y, axis=axis) - reduce(x, axis=axis)

    result = sps.bootstrap(
        (sb, sa), diff, confidence_level=1 - alpha, n_resamples=2000, method="percentile", random_state=rng
    )
    out["ci"] = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    return out


def _summary(x: FloatArray) -> dict[str, Any]:
    if len(x) == 0:
        return {"n": 0, "mean": None, "p50": None, "p95": None}
    p50, p95 = np.percentile(x, [50, 95])
    return {"n": len(x), "mean": float(x.mean()), "p50": float(p50), "p95": float(p95)}


def msprt_p_value(
    x_a: npt.ArrayLike, n_a: npt.ArrayLike, x_b: npt.ArrayLike, n_b: npt.ArrayLike, tau: float
) -> FloatArray:
    """The always-valid p-value (1 / likelihood ratio, capped at 1) for "rate B == rate A", vectorised.

    ``tau`` is the mixing distribution's standard deviation on the difference of rates: set it near
    the smallest effect worth detecting. The variance of the difference uses the pooled rate (the
    null's), and fewer than ``MIN_PER_ARM`` in either arm gives p = 1.
    """
    xa, na = np.asarray(x_a, dtype=float), np.asarray(n_a, dtype=float)
    xb, nb = np.asarray(x_b, dtype=float), np.asarray(n_b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (xa + xb) / (na + nb)
        variance = pooled * (1 - pooled) * (1 / na + 1 / nb)
        theta = xb / nb - xa / na
        t2 = tau * tau
        log_ratio = 0.5 * np.log(variance / (variance + t2)) + theta * theta * t2 / (2 * variance * (variance + t2))
        p = np.minimum(1.0, np.exp(-log_ratio))
    valid = (na >= MIN_PER_ARM) & (nb >= MIN_PER_ARM) & (variance > 0)
    return np.where(valid, p, 1.0).astype(np.float64)


def sequential_test(x_a: int, n_a: int, x_b: int, n_b: int, tau: float, alpha: float = 0.05) -> dict[str, Any]:
    """The mSPRT's verdict now: its always-valid p-value and whether it is under ``alpha``."""
    p = float(msprt_p_value(x_a, n_a, x_b, n_b, tau))
    return {"method": "mSPRT (normal mixture)", "tau": tau, "p_value": p, "significant": p <= alpha}


@dataclass(frozen=True)
class Plan:
    """How many requests per arm an experiment needs to detect ``effect`` on a base rate."""

    base_rate: float
    effect: float
    alpha: float
    power: float
    fixed_per_arm: int  # a single look at the end (statsmodels' power analysis)
    sequential_per_arm: int  # the mSPRT, checked after every batch, for the same power
    tau: float

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return dict(self.__dict__)


def fixed_sample_size(base_rate: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-arm n for a two-sided two-proportion test to see ``base_rate`` → ``base_rate + effect``."""
    check_rates(base_rate, effect)
    h = abs(proportion_effectsize(base_rate + effect, base_rate))
    n = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=1.0, alternative="two-sided")
    return math.ceil(float(n))


def check_rates(base_rate: float, effect: float) -> None:
    """Both rates strictly between 0 and 1, the effect not 0 (else a ValueError naming the problem)."""
    if not (0 < base_rate < 1 and 0 < base_rate + effect < 1 and effect != 0):
        raise ValueError("base_rate and base_rate + effect must lie strictly between 0 and 1, effect not 0")


def sequential_power(
    base_rate: float,
    effect: float,
    per_arm: int,
    tau: float,
    alpha: float = 0.05,
    batches: int = 20,
    simulations: int = 2000,
    seed: int = 0,
) -> float:
    """Share of simulated experiments where the mSPRT, checked after each of ``batches`` looks, rejects."""
    rng = np.random.default_rng(seed)
    batch = max(1, per_arm // batches)
    a = rng.binomial(batch, base_rate, size=(simulations, batches)).cumsum(axis=1)
    b = rng.binomial(batch, base_rate + effect, size=(simulations, batches)).cumsum(axis=1)
    n = np.arange(1, batches + 1) * batch
    p = msprt_p_value(a, n, b, n, tau)
    return float((p <= alpha).any(axis=1).mean())


@lru_cache(maxsize=256)
def plan(base_rate: float, effect: float, alpha: float = 0.05, power: float = 0.8, seed: int = 0) -> Plan:
    """The sample size for a fixed horizon (statsmodels) and for the sequential test (simulated).

    The sequential horizon is the smallest step of a quarter of the fixed one at which a seeded
    simulation reaches ``power`` plus a margin of 0.03 (so an independent simulation lands above it).
    """
    fixed = fixed_sample_size(base_rate, effect, alpha, power)
    tau = abs(effect)
    per_arm = fixed
    for step in range(4, 41):  # 1x .. 10x the fixed horizon
        per_arm = math.ceil(fixed * step / 4)
        if sequential_power(base_rate, effect, per_arm, tau, alpha, seed=seed) >= power + 0.03:
            break
    return Plan(base_rate, effect, alpha, power, fixed, per_arm, tau)


def binomial_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of a rate (scipy's exact binomial test)."""
    ci = sps.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)
