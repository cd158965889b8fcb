"""Burn-rate alerts end to end: an upstream fails, the alert fires at real webhooks; it recovers, it resolves.

The gateway, the fake upstream and two webhook receivers (generic JSON, Slack-style) are real
servers on loopback. A 50% target with a 1.5x burn rate keeps the test fast: it fires once more than
75% of the window's requests fail, and resolves as soon as good requests dilute the failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.domain.slo_config import AlertsConfig, SloConfig, SloDefinition
from opsgate.slo.alerts import AlertEvaluator, AlertStore
from opsgate.slo.engine import SloEngine
from opsgate.store.sql import SqlRecordStore
from tests.fake_upstream import FakeUpstream, Script
from tests.slo.conftest import make_record
from tests.slo.receiver import WebhookReceiver
from tests.support import start_gateway, wait_until


def alert_config(upstream: str, generic: str, slack: str) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": "up",
                "routing": {"retries": 0},
                "deployments": [
                    {"type": "openai", "base_url": upstream, "model": "real-model", "breaker": {"enabled": False}}
                ],
            }
        ],
        "slo": {"objectives": [{"name": "up-availability", "sli": "availability", "target": 0.5, "window": "1h"}]},
        "alerts": {
            "interval_seconds": 0.2,
            "rules": [{"severity": "page", "long_window": "1m", "short_window": "30s", "burn_rate": 1.5}],
            "webhooks": [{"url": generic}, {"url": slack, "format": "slack"}],
            "retries": 2,
        },
    }


@pytest.fixture()
def receivers() -> Iterator[tuple[WebhookReceiver, WebhookReceiver]]:
    generic, slack = WebhookReceiver(fail_first=1).start(), WebhookReceiver().start()
    yield generic, slack
    generic.stop()
    slack.stop()


def chat(url: str, count: int) -> list[int]:
    body = {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=url, timeout=10) as client:
        return [client.post("/v1/chat/completions", json=body).status_code for _ in range(count)]


def test_alert_fires_and_resolves_at_webhooks(
    upstream: FakeUpstream, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    generic, slack = receivers
    gateway = start_gateway(alert_config(upstream.base_url, generic.url, slack.url))
    try:
        upstream.script = Script(mode="status", status=500, body={"error": {"message": "db shard 7 down at 10.0.0.12"}})
        assert set(chat(gateway.url, 8)) == {502}
        assert wait_until(lambda: len(slack.bodies) >= 1, timeout=20), "no alert arrived"
        # The generic hook failed once (500) and got the event on the retry.
        assert wait_until(lambda: len(generic.bodies) >= 1, timeout=10)
        fired = generic.bodies[0]
        assert fired["type"] == "slo_alert" and fired["status"] == "firing"
        assert fired["slo"] == "up-availability" and fired["severity"] == "page"
        assert fired["details"]["burn_rates"]["30s"] == pytest.approx(2.0)  # all failing against 50% allowed
        assert generic.headers[0]["X-Opsgate-Event-Id"] == f"{fired['alert_id']}-firing"
        assert "FIRING" in slack.bodies[0]["text"] and "up-availability" in slack.bodies[0]["text"]
        alerts = httpx.get(gateway.url + "/admin/alerts").json()["data"]
        assert [(a["slo"], a["severity"], a["state"]) for a in alerts] == [("up-availability", "page", "firing")]
        status = httpx.get(gateway.url + "/admin/slo").json()["data"][0]
        assert status["state"] == "page" and status["current"] == 0.0

        # The failures form one error group, whatever their per-request details.
        # (The alert reads the live counters; the error groups read the store, which a loaded machine's
        # record writer reaches a little later: it once had 2 of the 8 here.)
        def grouped() -> list[dict[str, Any]]:
            return list(httpx.get(gateway.url + "/admin/errors?since=10m").json()["data"])

        assert wait_until(lambda: sum(g["count"] for g in grouped()) == 8, timeout=30), grouped()
        groups = grouped()
        assert len(groups) == 1 and groups[0]["count"] == 8
        assert groups[0]["deployment"] and len(groups[0]["examples"]) == 5

        upstream.script = Script()
        assert set(chat(gateway.url, 30)) == {200}
        assert wait_until(lambda: len(slack.bodies) >= 2, timeout=20), "no resolve message"
        assert wait_until(lambda: len(generic.bodies) >= 2, timeout=10)
        assert generic.bodies[1]["status"] == "resolved" and generic.bodies[1]["alert_id"] == fired["alert_id"]
        assert "RESOLVED" in slack.bodies[1]["text"]
        alert = httpx.get(gateway.url + "/admin/alerts").json()["data"][0]
        assert alert["state"] == "resolved" and alert["resolved_at"] >= alert["since"]
        # De-duplication: many more evaluations ran, but each transition was sent once.
        evaluator = gateway.app.state.gateway.slo.evaluator
        ticks = evaluator.ticks
        assert wait_until(lambda: evaluator.ticks >= ticks + 5, timeout=10)
        assert len(slack.bodies) == 2 and len(generic.bodies) == 2
    finally:
        gateway.server.stop()


async def test_replicas_share_one_lease(store: SqlRecordStore) -> None:
    """Two evaluators on one store (two replicas): only the lease holder evaluates and notifies."""
    store.write_batch([make_record(status=500) for _ in range(5)])
    config = AlertsConfig(rules=[{"severity": "ticket", "long_window": "1m", "short_window": "30s", "burn_rate": 1}])
    slo = SloConfig(objectives=[SloDefinition(name="a", sli="availability", target=0.9)])
    first, second = (AlertEvaluator(SloEngine(store, slo, config), AlertStore(store), config) for _ in range(2))
    events = await first.tick()
    assert [(e["slo"], e["status"]) for e in events] == [("a", "firing")]
    assert await second.tick() == []  # the first holds the lease
    assert await first.tick() == []  # still firing: nothing new to send
    await asyncio.to_thread(first.alerts.release, first.holder)
    assert await second.tick() == []  # took over; the firing was already sent
    assert second.ticks == 1
    assert [a["state"] for a in AlertStore(store).list()] == ["firing"]
