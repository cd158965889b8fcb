"""The online-evaluation budget is shared fairly per tenant: one tenant's flood never takes another's share.
A real gateway over HTTP (tenant keys, a flood in threads), and the budget itself on a made-up clock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from opsgate.evals.online_budget import MAX_TENANTS, FairBudget
from opsgate.evals.store import EvalStore
from tests.evals.test_online import online_config
from tests.fake_upstream import FakeUpstream, Script
from tests.support import start_gateway, wait_until

ADMIN = "bootstrap-admin-key-for-online-budget-0123456789"


def test_a_flooding_tenant_does_not_take_the_others_samples(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = online_config(upstream.base_url, max_per_second=10)
    config["auth"] = {"enabled": True, "admin_key": ADMIN}
    gateway = start_gateway(config)
    try:
        evaluator = gateway.app.state.gateway.online_eval
        upstream.script = Script(content="fine")
        keys = {}
        for tenant in ("a", "b"):
            made = httpx.post(
                gateway.url + "/admin/keys",
                headers={"Authorization": f"Bearer {ADMIN}"},
                json={"tenant": tenant, "role": "service"},
                timeout=30,
            )
            keys[tenant] = made.json()["secret"]

        def chat(key: str, client: httpx.Client) -> None:
            body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
            headers = {"Authorization": f"Bearer {key}"}
            assert client.post(gateway.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200

        stop = threading.Event()
        flooded = [0]

        def flood() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    chat(keys["a"], client)
                    flooded[0] += 1

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            assert wait_until(lambda: flooded[0] >= 40, timeout=60)  # tenant a is flooding
            with httpx.Client(timeout=30) as client:
                for _ in range(10):  # tenant b: ~3/s, below its half of the 10/s budget
                    chat(keys["b"], client)
                    time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        store = EvalStore(gateway.app.state.gateway.record_log.store)
        # b's first sample may meet the global cap still drained by a's burst from when it was alone.
        assert wait_until(lambda: len(store.all_items("online:b:chat")) >= 9, timeout=30), (
            len(store.all_items("online:b:chat")),
            evaluator.status(),
        )
        assert evaluator.counts["dropped_rate"] > 0  # the flood was held to its share
    finally:
        gateway.server.stop()


def test_shares_follow_the_active_tenants_and_tracking_is_bounded() -> None:
    budget = FairBudget(10.0, 0.0)
    admitted = {"a": 0, "b": 0}
    now = 0.0
    for step in range(1000):  # 10 s: a asks 100 times a second, b twice
        now = step * 0.01
        admitted["a"] += budget.take("a", now)
        if step % 50 == 0:
            admitted["b"] += budget.take("b", now)
    assert admitted["b"] == 20  # all of b's: below its half
    assert 45 <= admitted["a"] <= 60  # about half the budget (5/s), not all of it
    alone = FairBudget(10.0, 0.0)
    assert sum(alone.take("a", step * 0.01) for step in range(1000)) >= 95  # alone, a tenant gets the whole rate
    fresh = FairBudget(20.0, 0.0)
    assert sum(fresh.take("new", step * 0.005) for step in range(10)) == 10  # a new tenant starts with a burst
    for i in range(5 * MAX_TENANTS):  # many tenant names: tracking stays bounded
        budget.take(f"t{i}", now + 1)
    assert budget.active == MAX_TENANTS
    assert budget.take("a", now + 1 + 61) or True  # idle tenants are forgotten after a minute
    assert budget.active == 1
