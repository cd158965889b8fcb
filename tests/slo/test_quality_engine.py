"""Quality SLIs in the engine over both stores: tenant scoping, budgets and burn, history and the report."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from opsgate.domain.slo_config import AlertsConfig, SloConfig, SloDefinition
from opsgate.slo import quality, report
from opsgate.slo.engine import SloEngine
from opsgate.store.sql import SqlRecordStore
from tests.slo.conftest import make_record

NOW = (int(time.time()) // 3600) * 3600 + 1800.0
ANSWER = quality.SCANNED | quality.ANSWERED
REFUSAL = SloDefinition(name="refusals", sli="refusal_rate", target=0.1, window="1d")
PII = SloDefinition(name="pii", sli="pii_leak_rate", target=0.01, window="1d", filter={"model": "m"})


def engine(store: SqlRecordStore, *objectives: SloDefinition) -> SloEngine:
    return SloEngine(store, SloConfig(objectives=list(objectives)), AlertsConfig())


def test_targets_are_fractions_with_budgets() -> None:
    assert REFUSAL.is_ratio and REFUSAL.allowed_bad == 0.1
    with pytest.raises(ValidationError):
        SloDefinition(name="x", sli="toxicity_rate", target=1.5)
    assert SloDefinition(name="x", sli="toxicity_rate", target=0).allowed_bad == 0  # zero tolerance is allowed


def test_tenant_scope_budget_burn_and_history(store: SqlRecordStore) -> None:
    # Tenant a: 20 answers an hour ago, 2 refusals; in the last minutes 10 answers, 5 refusals.
    records = [make_record(NOW - 3600, tenant="a", quality_flags=ANSWER) for _ in range(18)]
    records += [make_record(NOW - 3600, tenant="a", quality_flags=ANSWER | quality.REFUSAL) for _ in range(2)]
    records += [make_record(NOW - 120, tenant="a", quality_flags=ANSWER) for _ in range(5)]
    records += [make_record(NOW - 120, tenant="a", quality_flags=ANSWER | quality.REFUSAL) for _ in range(5)]
    # Tenant b: every answer leaks PII and refuses; it must never show in tenant a's numbers.
    records += [
        make_record(NOW - 120, tenant="b", quality_flags=ANSWER | quality.REFUSAL | quality.PII_LEAK) for _ in range(30)
    ]
    records += [make_record(NOW - 120, tenant="a", status=400, quality_flags=quality.SCANNED | quality.INJECTION)]
    assert store.write_batch(records) == len(records)

    slo = engine(store, REFUSAL, PII)
    rows = {r["name"]: r for r in slo.status(tenant="a", now=NOW)}
    assert rows["refusals"]["events"] == 30 and rows["refusals"]["current"] == pytest.approx(7 / 30, abs=1e-6)
    assert rows["refusals"]["budget_remaining"] == pytest.approx(1 - (7 / 30) / 0.1, abs=1e-4)
    assert rows["refusals"]["burn_rates"]["5m"] == pytest.approx(5.0)  # 50% refusing against 10% allowed
    assert rows["pii"]["current"] == 0.0
    everyone = {r["name"]: r for r in slo.status(now=NOW)}
    assert everyone["refusals"]["events"] == 60 and everyone["pii"]["current"] == pytest.approx(0.5)
    assert everyone["pii"]["state"] == "page"  # 50x burn on both page windows

    points = slo.history("refusals", NOW - 7200, tenant="a", now=NOW)
    assert points and points[-1]["sli"] == pytest.approx(7 / 30, abs=1e-6)
    assert all(p["sli"] is None or 0 <= p["sli"] <= 1 for p in points)
    # Hourly points: nothing before the traffic, 2 of 20 after the first hour, then the burst.
    assert [p["sli"] for p in points][-3:] == [None, pytest.approx(0.1), pytest.approx(7 / 30, abs=1e-6)]
    assert points[-2]["budget_remaining"] == pytest.approx(0.0)

    data = report.collect(slo, NOW - 7200, "a")
    text = report.markdown(data)
    assert "| refusals | refusal_rate |" in text
