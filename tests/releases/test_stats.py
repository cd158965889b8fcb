"""The experiment statistics, proven by simulation: peeking does not inflate false positives, and the
planned sample size detects the planned effect."""

from __future__ import annotations

from typing import Any

import numpy as np

from opsgate.releases import stats

SIMULATIONS = 4000  # the bound on each rate below is a 95% Clopper-Pearson interval over these
BATCHES = 40


Arrays = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]


def _peeking(base: float, effect: float, per_batch: int, tau: float, seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    a = rng.binomial(per_batch, base, size=(SIMULATIONS, BATCHES)).cumsum(axis=1)
    b = rng.binomial(per_batch, base + effect, size=(SIMULATIONS, BATCHES)).cumsum(axis=1)
    n = np.arange(1, BATCHES + 1) * per_batch
    return a, b, n


def test_aa_false_positive_rate_stays_under_alpha_when_checked_after_every_batch() -> None:
    alpha = 0.05
    for base, tau, seed in ((0.02, 0.01, 1), (0.1, 0.03, 2), (0.5, 0.05, 3)):
        a, b, n = _peeking(base, 0.0, 100, tau, seed)
        p = stats.msprt_p_value(a, n, b, n, tau)
        false = int((p <= alpha).any(axis=1).sum())
        low, high = stats.binomial_interval(false, SIMULATIONS)
        assert high <= alpha, (base, false / SIMULATIONS, (low, high))


def test_naive_peeking_would_inflate_false_positives() -> None:
    # The control that shows the simulation can see inflation: a fixed-horizon z-test at every look.
    a, b, n = _peeking(0.1, 0.0, 100, 0.03, 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (a + b) / (2 * n)
        z = (b - a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    naive = (np.abs(z) >= 1.96).any(axis=1).mean()
    assert naive > 0.15


def test_planted_effect_at_the_planned_size_is_detected_with_80_percent_power() -> None:
    plan = stats.plan(0.10, 0.03, alpha=0.05, power=0.8)
    assert plan.sequential_per_arm >= plan.fixed_per_arm
    # Sequential, checked after each of 20 batches, independent seed from the plan's own simulation.
    detected = stats.sequential_power(0.10, 0.03, plan.sequential_per_arm, plan.tau, simulations=SIMULATIONS, seed=99)
    low, _ = stats.binomial_interval(int(detected * SIMULATIONS), SIMULATIONS)
    assert detected >= 0.80, detected
    # Fixed horizon: statsmodels' n with one two-proportion test at the end (its approximation is close).
    rng = np.random.default_rng(7)
    n = plan.fixed_per_arm
    xa = rng.binomial(n, 0.10, SIMULATIONS)
    xb = rng.binomial(n, 0.13, SIMULATIONS)
    hits = sum(stats.proportion_test(int(x), n, int(y), n)["p_value"] <= 0.05 for x, y in zip(xa, xb, strict=True))
    low, high = stats.binomial_interval(hits, SIMULATIONS)
    assert low <= 0.80 + 0.02 and high >= 0.80 - 0.005, (hits / SIMULATIONS, low, high)


def test_tests_and_intervals() -> None:
    result = stats.proportion_test(10, 1000, 40, 1000)
    assert result["p_value"] < 0.001 and 0 < result["ci"][0] < 0.03 < result["ci"][1]
    same = stats.proportion_test(0, 100, 0, 100)
    assert same["p_value"] == 1.0
    rng = np.random.default_rng(0)
    slow = stats.distribution_test(rng.exponential(100, 2000), rng.exponential(150, 2000))
    assert slow["p_value"] < 0.01 and slow["ci"][0] > 0
    assert slow["a"]["p95"] > slow["a"]["p50"]
    assert stats.distribution_test([1.0], [2.0])["p_value"] is None
    verdict = stats.sequential_test(10, 1000, 60, 1000, tau=0.02)
    assert verdict["significant"]
