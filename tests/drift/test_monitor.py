"""The drift monitor: one replica checks at a time (the lease), results stored, drift SLOs measured."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest

from opsgate.domain.config import GatewayConfig
from opsgate.drift.history import DriftHistory
from opsgate.drift.service import DriftMonitor, build_drift_monitor
from opsgate.store.sql import SqlRecordStore
from tests.drift.conftest import models
from tests.drift.traffic import mixed
from tests.store.conftest import pg_url, store_url  # noqa: F401 - fixtures

HOUR = 3600
NOW = 1_765_000_000.0


@pytest.fixture()
def store(store_url: str) -> Iterator[SqlRecordStore]:  # noqa: F811
    from opsgate.store.record_log import open_store

    opened = open_store(store_url)
    yield opened
    opened.close()


def gateway_config(**drift: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "models": models("chat-model", "other"),
            "drift": {"enabled": True, "embeddings": False, "bucket": "1h", "interval": "1m", **drift},
            "slo": {
                "objectives": [
                    {"name": "chat-drift", "sli": "drift", "window": "1d", "filter": {"model": "chat-model"}},
                    {"name": "any-drift", "sli": "drift", "window": "1d"},
                    {"name": "other-drift", "sli": "drift", "window": "1d", "filter": {"model": "other"}},
                    {"name": "acme-drift", "sli": "drift", "window": "1d", "filter": {"tenant": "acme"}},
                ]
            },
        }
    )


def feed(monitor: DriftMonitor, hours_ago: float, n: int, tenant: str | None = None, **shares: float) -> None:
    rng = random.Random(int(hours_ago * 10) + n)
    for record in mixed(rng, n, **shares):
        record["ts"] = NOW - hours_ago * HOUR + rng.random() * 60
        record["tenant"] = tenant
        monitor.collector.write(record)
    monitor.collector.drain()


def measurements(store: SqlRecordStore) -> dict[str, list[float]]:
    with store.connection() as conn:
        rows = store.execute(conn, "SELECT slo, value FROM slo_measurements ORDER BY ts").fetchall()
    out: dict[str, list[float]] = {}
    for slo, value in rows:
        out.setdefault(slo, []).append(float(value))
    return out


def test_build_is_off_unless_enabled(store: SqlRecordStore) -> None:
    assert build_drift_monitor(GatewayConfig(), lambda: store) is None
    assert build_drift_monitor(gateway_config(), None) is None
    assert isinstance(build_drift_monitor(gateway_config(), lambda: store), DriftMonitor)


def test_one_replica_checks_and_feeds_the_drift_objectives(store: SqlRecordStore) -> None:
    config = gateway_config(per_tenant=True)
    first, second = DriftMonitor(config, lambda: store), DriftMonitor(config, lambda: store)
    # Both replicas collect; each flushes its own rows. Reference 30 h ago: English; now: 40% German.
    feed(first, 30, 300)
    feed(second, 30, 300)
    feed(first, 2, 200, de=0.4)
    feed(second, 2, 200, de=0.4)
    feed(first, 30, 150, tenant="acme")
    feed(first, 2, 150, tenant="acme")
    second.collector.flush(now=NOW)
    results = first.tick(now=NOW)
    assert second.tick(now=NOW + 1) == []  # the lease is held by the first replica
    assert first.status()["leading"] and not second.status()["leading"]
    scopes = {(r["alias"], r["tenant"]) for r in results}
    assert scopes == {("chat-model", None), ("chat-model", "acme")}
    overall = next(r for r in results if r["tenant"] is None)
    assert overall["drifted"] and overall["reference"]["requests"] == 750 and overall["current"]["requests"] == 550
    assert overall["tests"][0]["feature"] == "prompt_language"
    acme = next(r for r in results if r["tenant"] == "acme")
    assert not acme["drifted"]
    stored = DriftHistory(store).list()
    assert {r["id"] for r in stored} == {r["id"] for r in results}
    values = measurements(store)
    assert values["chat-drift"] == [1.0] and values["any-drift"] == [1.0]
    assert values["acme-drift"] == [0.0]
    assert "other-drift" not in values  # no check of that alias: no measurement
    status = first.status()
    assert status["checks"] == 2 and status["alarms"] == 1 and status["collector"]["summarised"] == 800


def test_lease_passes_on_when_the_holder_stops(store: SqlRecordStore) -> None:
    config = gateway_config()
    first, second = DriftMonitor(config, lambda: store), DriftMonitor(config, lambda: store)
    feed(first, 30, 150)
    feed(first, 2, 150)
    assert first.tick(now=NOW)
    asyncio.run(first.stop())  # gives the lease up
    assert second.tick(now=NOW + 5)
    assert second.status()["leading"]


def test_insufficient_checks_are_stored_but_not_measured(store: SqlRecordStore) -> None:
    monitor = DriftMonitor(gateway_config(), lambda: store)
    feed(monitor, 2, 30)
    results = monitor.tick(now=NOW)
    assert len(results) == 1 and results[0]["insufficient"] and not results[0]["drifted"]
    assert measurements(store) == {}
