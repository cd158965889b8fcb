"""Wilson intervals against published values, and the Proportion helper."""

from __future__ import annotations

import pytest

from opsgate.redteam.stats import Proportion, wilson_interval


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Values from the closed form (Wilson 1927; Newcombe 1998, Table I uses the same method).
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),  # Newcombe's example 81/263
        (57, 60, 0.8630, 0.9829),
        (1, 60, 0.0029, 0.0886),
    ],
)
def test_known_wilson_values(successes: int, trials: int, low: float, high: float) -> None:
    got_low, got_high = wilson_interval(successes, trials)
    assert got_low == pytest.approx(low, abs=1e-4)
    assert got_high == pytest.approx(high, abs=1e-4)


def test_edges_are_exact_and_inputs_are_checked() -> None:
    assert wilson_interval(0, 5)[0] == 0.0
    assert wilson_interval(5, 5)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(1, 0)
    with pytest.raises(ValueError):
        wilson_interval(6, 5)


def test_proportion() -> None:
    p = Proportion(8, 10)
    assert p.rate == 0.8
    assert p.describe() == "80.0% [49.0%, 94.3%] (8/10)"
    data = p.to_dict()
    assert data["successes"] == 8 and data["trials"] == 10
    assert data["ci95"] == pytest.approx([0.4902, 0.9433], abs=1e-4)
    empty = Proportion(0, 0)
    assert empty.rate is None and empty.interval is None and empty.describe() == "n/a"
    assert empty.to_dict()["ci95"] is None
