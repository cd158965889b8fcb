"""Rollups filled by the writer's batch insert, and the SLO engine reading them (SQLite and PostgreSQL)."""

from __future__ import annotations

import time

import pytest

from opsgate.domain.slo_config import AlertsConfig, SloConfig, SloDefinition
from opsgate.slo.engine import MAX_HISTORY_SECONDS, SloEngine
from opsgate.slo.reader import Scope
from opsgate.store.sql import SqlRecordStore
from tests.slo.conftest import make_record

NOW = (int(time.time()) // 3600) * 3600 + 1800.0  # mid-hour: windows do not straddle odd buckets


def engine(store: SqlRecordStore, *objectives: SloDefinition) -> SloEngine:
    return SloEngine(store, SloConfig(objectives=list(objectives)), AlertsConfig())


def test_rollups_count_what_was_inserted_once(store: SqlRecordStore) -> None:
    records = [make_record(NOW - 30, status=200, latency_ms=40.0) for _ in range(6)]
    records += [make_record(NOW - 30, status=502, latency_ms=3.0), make_record(NOW - 30, status=400)]
    records += [make_record(NOW - 30, status=200, latency_ms=20.0, ttft_ms=300.0, stream=True)]
    assert store.write_batch(records) == 9
    assert store.write_batch(records) == 0  # a journal replay: nothing new, nothing counted again
    reader = engine(store).reader
    for seconds in (60, 86400):  # 10-second table and hourly table
        sums = reader.sums(NOW - 60, Scope(), seconds)
        assert sums["requests"] == 9
        assert sums["errors"] == 1
        assert sums["client_errors"] == 1
        assert sums["l1"] == 7  # successful requests within 50 ms (the 400 and 502 are not in the histogram)
        assert sums["ttft_count"] == 1 and sums["t4"] == 1 and sums["t3"] == 0
        assert sums["cost"] == pytest.approx(0.009)
    assert reader.sums(NOW - 60, Scope(model="other"), 60)["requests"] == 0


def test_status_budget_burn_and_page(store: SqlRecordStore) -> None:
    # 30 days of good traffic, then a burst of failures in the last minutes.
    old = [make_record(NOW - 86400 * d - 7200) for d in range(1, 29) for _ in range(50)]
    recent = [make_record(NOW - 60, status=503) for _ in range(20)] + [make_record(NOW - 60) for _ in range(20)]
    store.write_batch(old + recent)
    availability = SloDefinition(name="avail", sli="availability", target=0.99, sla=0.95, kpi="reliability")
    latency = SloDefinition(name="fast", sli="latency", target=0.9, threshold_ms=250)
    rows = {r["name"]: r for r in engine(store, availability, latency).status(now=NOW)}
    avail = rows["avail"]
    assert avail["events"] == 1440
    assert avail["current"] == pytest.approx(1 - 20 / 1440, abs=1e-6)
    assert avail["budget_remaining"] == pytest.approx(1 - (20 / 1440) / 0.01, abs=1e-4)
    assert avail["burn_rates"]["5m"] == pytest.approx(50.0)  # half failing against 1% allowed
    assert avail["burn_rates"]["1h"] == pytest.approx(50.0)
    assert avail["state"] == "page"
    assert avail["sla"] == {"threshold": 0.95, "met": True}
    assert avail["kpi"] == "reliability"
    assert rows["fast"]["current"] == 1.0 and rows["fast"]["state"] == "ok"


def test_tenant_scope_and_visibility(store: SqlRecordStore) -> None:
    store.write_batch([make_record(NOW - 60, tenant="a", status=500), make_record(NOW - 60, tenant="b")])
    shared = SloDefinition(name="all", sli="availability", target=0.9)
    only_b = SloDefinition(name="b-only", sli="availability", target=0.9, filter={"tenant": "b"})
    slo_engine = engine(store, shared, only_b)
    assert [r["name"] for r in slo_engine.status("a", NOW)] == ["all"]
    assert slo_engine.status("a", NOW)[0]["current"] == 0.0  # only tenant a's failing request
    assert {r["name"]: r["current"] for r in slo_engine.status(None, NOW)} == {"all": 0.5, "b-only": 1.0}


def test_history_and_timeseries(store: SqlRecordStore) -> None:
    store.write_batch(
        [make_record(NOW - 3 * 3600, status=500)] + [make_record(NOW - h * 3600, latency_ms=80.0) for h in range(1, 5)]
    )
    slo_engine = engine(store, SloDefinition(name="a", sli="availability", target=0.5, window="2h"))
    history = slo_engine.history("a", NOW - 6 * 3600, now=NOW)
    assert history and all(set(p) == {"ts", "sli", "budget_remaining"} for p in history)
    assert min(p["sli"] for p in history if p["sli"] is not None) < 1.0
    assert history[-1]["sli"] == 1.0  # the failure left the 2 h window
    series = slo_engine.timeseries(NOW - 5 * 3600, 3600, now=NOW)
    assert sum(p["requests"] for p in series) == 5 and sum(p["errors"] for p in series) == 1
    busy = [p for p in series if p["requests"] and not p["errors"]]
    assert busy and all(50 <= p["p50_ms"] <= 100 for p in busy)


def test_history_since_is_bounded_both_ways(store: SqlRecordStore) -> None:
    # ``since`` is a reader's query parameter: the year 1 asked for 17.6 million hourly buckets per
    # request (1.3 GB for six readers at once), a time after now for an array of negative size (a 500).
    store.write_batch([make_record(NOW - 3600, latency_ms=80.0)])
    slo_engine = engine(store, SloDefinition(name="a", sli="availability", target=0.5, window="2h"))
    year_one = -62135596800.0
    started = time.process_time()
    far = slo_engine.history("a", year_one, now=NOW)
    assert time.process_time() - started < 5.0  # bounded work, not 17.6 million buckets
    assert 0 < len(far) <= 201 and far[0]["ts"] >= NOW - MAX_HISTORY_SECONDS - 3 * 3600
    assert slo_engine.history("a", NOW + 10**9, now=NOW) == [] or all(
        p["ts"] <= NOW + 3600 for p in slo_engine.history("a", NOW + 10**9, now=NOW)
    )


def test_measured_and_throughput_slis(store: SqlRecordStore) -> None:
    store.write_batch([make_record(NOW - 100) for _ in range(36)])
    throughput = SloDefinition(name="tp", sli="throughput", target=0.02, window="1h")
    fresh = SloDefinition(name="fresh", sli="data_freshness", target=3600, window="7d")
    slo_engine = engine(store, throughput, fresh)
    slo_engine.reader.add_measurement("fresh", NOW - 1000, 3000.0, None)
    rows = {r["name"]: r for r in slo_engine.status(now=NOW)}
    assert rows["tp"]["current"] == pytest.approx(0.01)
    assert rows["tp"]["state"] == "ticket"  # 0.01 req/s against 0.02 wanted
    assert rows["fresh"]["current"] == pytest.approx(4000.0)  # measured 3000 s old, 1000 s ago
    assert rows["fresh"]["state"] == "ticket" and rows["fresh"]["budget_remaining"] is None
