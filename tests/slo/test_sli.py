"""SLI arithmetic: histogram shares and percentiles, burn rates and budgets."""

from __future__ import annotations

import pytest

from opsgate.domain.slo_config import SloDefinition
from opsgate.slo import sli
from opsgate.store.rollups import BOUNDS_MS


def cumulative(latencies: list[float]) -> list[float]:
    return [float(sum(1 for v in latencies if v <= b)) for b in BOUNDS_MS]


def test_share_within_exact_bound_and_interpolated() -> None:
    counts = cumulative([10, 20, 60, 90, 200, 2000])
    assert sli.share_within(100, counts, 6) == 4  # 100 ms is a bucket bound: exact
    # 175 ms is half way from 100 to 250: half of the one request in that bucket.
    assert sli.share_within(175, counts, 6) == pytest.approx(4.5)
    assert sli.share_within(1e9, counts, 6) == 6


def test_percentile_interpolates_within_bucket() -> None:
    counts = cumulative([30.0] * 50 + [300.0] * 50)
    assert sli.percentile(0.5, counts, 100) == pytest.approx(50.0)  # the 25-50 ms bucket ends at rank 50
    p95 = sli.percentile(0.95, counts, 100)
    assert p95 is not None and 250 < p95 <= 500
    assert sli.percentile(0.5, counts, 0) is None


def test_burn_rate_and_budget_for_availability() -> None:
    slo = SloDefinition(name="a", sli="availability", target=0.999)
    sums = {"requests": 1000.0, "errors": 2.0, "client_errors": 0.0}
    bad, total = sli.bad_and_total(slo, sums)
    assert (bad, total) == (2.0, 1000.0)
    assert sli.burn_rate(slo, bad, total) == pytest.approx(2.0)  # 0.2% bad against 0.1% allowed
    assert sli.budget_remaining(slo, bad, total) == pytest.approx(-1.0)
    assert sli.ratio_value(slo, bad, total) == pytest.approx(0.998)


def test_client_errors_do_not_burn_availability() -> None:
    slo = SloDefinition(name="a", sli="availability", target=0.99)
    bad, total = sli.bad_and_total(slo, {"requests": 100.0, "errors": 0.0, "client_errors": 50.0})
    assert (bad, total) == (0.0, 50.0)
    assert sli.budget_remaining(slo, bad, total) == 1.0


def test_error_rate_target_is_an_upper_bound() -> None:
    slo = SloDefinition(name="e", sli="error_rate", target=0.001)
    assert slo.allowed_bad == 0.001
    assert sli.ratio_value(slo, 1, 2000) == pytest.approx(0.0005)
    assert sli.meets(slo, 0.0005, slo.target) is True
    assert sli.meets(slo, 0.002, slo.target) is False


def test_definition_validation() -> None:
    with pytest.raises(ValueError, match="threshold_ms"):
        SloDefinition(name="l", sli="latency", target=0.95)
    with pytest.raises(ValueError, match="no error budget"):
        SloDefinition(name="a", sli="availability", target=1.0)
    with pytest.raises(ValueError, match="duration"):
        SloDefinition(name="a", sli="availability", target=0.9, window="forever")
