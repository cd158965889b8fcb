"""The measured SLI kinds ``drift`` and ``behaviour_change`` (see /work/notes/slo-contract.md).

Measurements are written as the drift monitor and the sentinel write them (``add_measurement``);
the engine's state, the alert rows and a real webhook receiver show what an operator would get.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from opsgate.domain.slo_config import AlertsConfig, SloConfig, SloDefinition
from opsgate.slo.alerts import AlertEvaluator, AlertStore
from opsgate.slo.engine import SloEngine
from opsgate.slo.reader import RollupReader
from opsgate.store.sql import SqlRecordStore
from tests.slo.receiver import WebhookReceiver
from tests.support import wait_until

DRIFT = SloDefinition(name="chat-drift", sli="drift", window="1d", filter={"model": "chat"})
CHANGE = SloDefinition(
    name="chat-behaviour", sli="behaviour_change", window="1d", filter={"model": "chat", "deployment": "chat#0"}
)
TENANT_DRIFT = SloDefinition(name="acme-drift", sli="drift", window="1d", filter={"tenant": "acme"})


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    started = WebhookReceiver().start()
    yield started
    started.stop()


def by_name(engine: SloEngine, now: float, tenant: str | None = None) -> dict[str, dict[str, object]]:
    return {row["name"]: row for row in engine.status(tenant, now=now)}


def test_target_defaults_to_zero_and_is_a_fraction() -> None:
    assert DRIFT.target == 0.0 and CHANGE.target == 0.0
    assert SloDefinition(name="d", sli="drift", target=0.5).target == 0.5
    with pytest.raises(ValidationError):
        SloDefinition(name="d", sli="behaviour_change", target=2)
    with pytest.raises(ValidationError):
        SloDefinition(name="d", sli="availability")  # other SLIs still need a target


def test_no_measurement_is_no_alarm(store: SqlRecordStore) -> None:
    rows = by_name(SloEngine(store, SloConfig(objectives=[DRIFT, CHANGE]), AlertsConfig()), time.time())
    for name in ("chat-drift", "chat-behaviour"):
        assert rows[name]["current"] is None and rows[name]["state"] == "ok" and rows[name]["firing"] == []


def test_drift_tickets_and_behaviour_change_pages(store: SqlRecordStore) -> None:
    now = time.time()
    reader = RollupReader(store)
    engine = SloEngine(store, SloConfig(objectives=[DRIFT, CHANGE, TENANT_DRIFT]), AlertsConfig())
    reader.add_measurement("chat-drift", now - 120, 1.0, None)
    reader.add_measurement("chat-behaviour", now - 60, 0.25, None)
    reader.add_measurement("acme-drift", now - 60, 0.0, "acme")
    rows = by_name(engine, now)
    assert rows["chat-drift"]["current"] == 1.0 and rows["chat-drift"]["meets_target"] is False
    assert rows["chat-drift"]["state"] == "ticket"
    assert rows["chat-drift"]["firing"] == ["ticket: drift detected (model=chat)"]
    assert rows["chat-behaviour"]["current"] == 0.25 and rows["chat-behaviour"]["state"] == "page"
    assert rows["chat-behaviour"]["firing"] == ["page: deployment chat#0 changed behaviour"]
    assert rows["acme-drift"]["current"] == 0.0 and rows["acme-drift"]["state"] == "ok"

    # The newest measurement within the window decides: the next check saw no drift.
    reader.add_measurement("chat-drift", now - 10, 0.0, None)
    assert by_name(engine, now)["chat-drift"]["state"] == "ok"
    # A measurement older than the window is forgotten.
    assert by_name(engine, now + 2 * 86400)["chat-behaviour"]["current"] is None


def test_tenant_objective_reads_its_tenant_measurement_and_stays_private(store: SqlRecordStore) -> None:
    now = time.time()
    reader = RollupReader(store)
    engine = SloEngine(store, SloConfig(objectives=[DRIFT, TENANT_DRIFT]), AlertsConfig())
    reader.add_measurement("acme-drift", now - 5, 1.0, None)  # a global row does not feed a tenant objective
    assert by_name(engine, now)["acme-drift"]["current"] is None
    reader.add_measurement("acme-drift", now - 1, 1.0, "acme")
    assert by_name(engine, now)["acme-drift"]["firing"] == ["ticket: drift detected (tenant=acme)"]
    assert set(by_name(engine, now, tenant="acme")) == {"chat-drift", "acme-drift"}
    assert set(by_name(engine, now, tenant="globex")) == {"chat-drift"}


async def test_misses_open_alert_rows_and_reach_the_webhook(store: SqlRecordStore, receiver: WebhookReceiver) -> None:
    config = AlertsConfig(webhooks=[{"url": receiver.url}], retries=0)
    slo = SloConfig(objectives=[DRIFT, CHANGE, TENANT_DRIFT])
    evaluator = AlertEvaluator(SloEngine(store, slo, config), AlertStore(store), config)
    reader = RollupReader(store)
    now = time.time()
    reader.add_measurement("chat-drift", now - 3, 1.0, None)
    reader.add_measurement("chat-behaviour", now - 3, 1.0, None)  # the upstream's fingerprint changed
    reader.add_measurement("acme-drift", now - 3, 1.0, "acme")
    events = await evaluator.tick(now)
    assert sorted((e["slo"], e["tenant"], e["severity"], e["status"]) for e in events) == [
        ("acme-drift", "acme", "ticket", "firing"),
        ("chat-behaviour", None, "page", "firing"),
        ("chat-drift", None, "ticket", "firing"),
    ]
    assert wait_until(lambda: len(receiver.bodies) >= 3, timeout=30)
    page = next(b for b in receiver.bodies if b["slo"] == "chat-behaviour")
    assert page["severity"] == "page" and page["details"]["firing"] == ["page: deployment chat#0 changed behaviour"]
    assert page["details"]["current"] == 1.0
    rows = AlertStore(store).list()
    assert {(a["slo"], a["severity"], a["state"]) for a in rows} == {
        ("acme-drift", "ticket", "firing"),
        ("chat-behaviour", "page", "firing"),
        ("chat-drift", "ticket", "firing"),
    }
    assert [a["slo"] for a in AlertStore(store).list(tenant="acme")] == ["acme-drift"]

    # The next checks are clean: every alert resolves, and the webhook hears it once.
    for name, tenant in (("chat-drift", None), ("chat-behaviour", None), ("acme-drift", "acme")):
        reader.add_measurement(name, now + 1, 0.0, tenant)
    resolved = await evaluator.tick(now + 2)
    assert sorted(e["status"] for e in resolved) == ["resolved"] * 3
    assert {a["state"] for a in AlertStore(store).list()} == {"resolved"}
    assert wait_until(lambda: len(receiver.bodies) >= 6, timeout=30)
    assert await evaluator.tick(now + 3) == []
    await evaluator.stop()
