"""Unshifted windows, resampled many times from one pool, alarm at most at the configured rate.

Both windows of each resample are drawn with replacement from the same pool of constructed records,
so "no drift" is true by construction. With the minimum effects set tiny, only the statistics decide:
Holm over every test of a check must hold the family-wise false-alarm rate at alpha. We assert it
with a one-sided binomial test (scipy) instead of an exact count.
"""

from __future__ import annotations

import random

from scipy.stats import binomtest

from opsgate.drift.engine import Span, headline, run_check
from tests.drift.conftest import CachedEncoder, config, observations, summarise
from tests.drift.traffic import mixed

RESAMPLES = 200
WINDOW = 300
ALPHA = 0.05
TINY = {"total_variation": 1e-6, "relative_change": 1e-6, "rate_change": 1e-6, "mmd": 1e-9}


def test_false_alarm_rate_of_resampled_unshifted_windows(encoder: CachedEncoder) -> None:
    pool = observations(mixed(random.Random(42), 400, de=0.1, code=0.2, attack=0.05, refusal=0.05, toxic=0.05))
    settings = config(alpha=ALPHA, min_effect=TINY, permutations=400)
    rng = random.Random(7)
    alarms: list[str] = []
    tested = 0
    for i in range(RESAMPLES):
        reference = summarise([rng.choice(pool) for _ in range(WINDOW)], encoder, seed=2 * i)
        current = summarise([rng.choice(pool) for _ in range(WINDOW)], encoder, seed=2 * i + 1)
        result = run_check(settings, "m", None, reference, current, Span(0, 1), Span(1, 2))
        assert result["insufficient"] is None
        tested += len(result["tests"])
        if result["drifted"]:
            alarms.append(headline(result))
    assert tested >= RESAMPLES * 8  # every check ran the whole family (language, lengths, rates, embeddings)
    print(f"false alarms: {len(alarms)}/{RESAMPLES} at alpha={ALPHA}, {tested} tests")  # shown with -s
    upper = binomtest(len(alarms), RESAMPLES, ALPHA, alternative="greater")
    assert upper.pvalue > 0.01, f"{len(alarms)}/{RESAMPLES} false alarms at alpha={ALPHA}: {alarms[:5]}"


def test_default_thresholds_never_alarm_on_unshifted_windows(encoder: CachedEncoder) -> None:
    # With the default minimum effects a resampled window is far from an alarm.
    pool = observations(mixed(random.Random(43), 400, de=0.1, code=0.2, attack=0.05))
    rng = random.Random(8)
    for i in range(20):
        reference = summarise([rng.choice(pool) for _ in range(WINDOW)], encoder, seed=100 + i)
        current = summarise([rng.choice(pool) for _ in range(WINDOW)], encoder, seed=200 + i)
        result = run_check(config(), "m", None, reference, current, Span(0, 1), Span(1, 2))
        assert not result["drifted"], headline(result)
