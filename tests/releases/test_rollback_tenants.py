"""Auto-rollback on client-steered signals: one rating per request (the latest), and no single tenant
decides a release for the others (FINDINGS #4: a tenant's thumbs-down on its canary requests, three times
each, rolled the operator's canary back for everyone and paged).

Store-level tests write records and feedback rows directly; the last one is the probe over real HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsgate.domain.config import parse_config
from opsgate.releases import metrics
from opsgate.releases.rollback import AutoRollback
from opsgate.releases.store import ReleaseStore
from opsgate.slo.feedback import Feedback, store_feedback
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore
from tests.fake_upstream import FakeUpstream
from tests.support import start_gateway, wait_until

SPEC: dict[str, Any] = {"deployments": None, "prompt": None, "parameters": {}}
ADMIN = "bootstrap-admin-key-for-rollback-tenants-0123"


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[SqlRecordStore]:
    opened = open_store(f"sqlite:///{tmp_path}/r.db")
    yield opened
    opened.close()


def _canary(store: SqlRecordStore) -> str:
    releases = ReleaseStore(store)
    base = releases.create("up", SPEC, None, "t")
    candidate = releases.create("up", SPEC, None, "t")
    releases.activate("up", base.id, "t")
    state = releases.canary("up", candidate.id, 50, "t")
    assert state.experiment is not None
    return state.experiment


def _records(
    store: SqlRecordStore, experiment: str, arm: str, tenant: str | None, n: int, flagged: int = 0
) -> list[str]:
    now = time.time()
    ids = [f"{tenant}-{arm}-{i}" for i in range(n)]
    rows = []
    for i, rid in enumerate(ids):
        tags: dict[str, Any] = {"experiment": experiment, "arm": arm}
        if i < flagged:
            tags["guard"] = {"output": [{"scanner": "toxicity", "verdict": "fail", "score": 0.9}]}
        rows.append(
            {"id": rid, "ts": now, "tenant": tenant, "endpoint": "chat", "model": "up", "status": 200,
             "latency_ms": 50.0, "tags": tags, "experiment": experiment, "arm": arm}
        )  # fmt: skip
    store.write_batch(rows)
    return ids


def _rate(store: SqlRecordStore, ids: list[str], tenant: str | None, up: bool, times: int = 1) -> None:
    record = {"tenant": tenant, "model": "up", "deployment": None}
    for rid in ids:
        for _ in range(times):
            store_feedback(store, Feedback(rid, "up" if up else "down", None, up, None, None), record)


def test_feedback_counts_once_per_request_the_latest_verdict(store: SqlRecordStore) -> None:
    experiment = _canary(store)
    ids = _records(store, experiment, "canary", "acme", 10)
    _rate(store, ids, "acme", up=False, times=3)  # three thumbs-down each
    _rate(store, ids[:4], "acme", up=True)  # then four of them changed their mind
    arm = metrics.collect(store, "up", experiment, 0.0)["canary"]
    assert (arm.rated, arm.positive) == (10, 4)
    assert (arm.tenants["acme"].rated, arm.tenants["acme"].positive) == (10, 4)
    found = ReleaseStore(store).experiment(experiment)
    assert found is not None
    assert metrics.report(store, found)["arms"]["canary"]["feedback"] == {"rated": 10, "positive_rate": 0.4}


def test_one_tenants_ratings_do_not_roll_back_for_everyone(store: SqlRecordStore) -> None:
    watcher = AutoRollback(parse_config({}), lambda: store)
    experiment = _canary(store)
    # The hostile tenant: thumbs-down on every canary answer, thumbs-up on every control answer.
    _rate(store, _records(store, experiment, "canary", "hostile", 60), "hostile", up=False)
    _rate(store, _records(store, experiment, "control", "hostile", 60), "hostile", up=True)
    assert watcher.check() == []  # alone on the alias: its word alone does not decide
    # Other tenants use the alias and rate nothing, or rate both arms the same.
    _records(store, experiment, "canary", "quiet", 40)
    _records(store, experiment, "control", "quiet", 40)
    _rate(store, _records(store, experiment, "canary", "fair", 40), "fair", up=True)
    _rate(store, _records(store, experiment, "control", "fair", 40), "fair", up=True)
    assert watcher.check() == []
    state = ReleaseStore(store).state("up")
    assert state is not None and state.arms is not None
    # Over all requests the difference is significant: only leaving the hostile tenant out clears it.
    from opsgate.releases.rollback import leave_one_tenant_out

    arms = metrics.collect(store, "up", experiment, 0.0)
    xa, na, xb, nb = leave_one_tenant_out(arms["control"], arms["canary"], "feedback_positive_rate")
    assert (na[0], nb[0]) == (100, 100) and (xa[0], xb[0]) == (100, 40)
    assert sorted(zip(na[1:], nb[1:], strict=True)) == [(40, 40), (60, 60), (100, 100)]


def test_a_canary_worse_for_several_tenants_still_rolls_back(store: SqlRecordStore) -> None:
    watcher = AutoRollback(parse_config({}), lambda: store)
    experiment = _canary(store)
    for tenant in ("a", "b", "c"):
        canary = _records(store, experiment, "canary", tenant, 60)
        _rate(store, canary[:30], tenant, up=False)
        _rate(store, canary[30:], tenant, up=True)
        _rate(store, _records(store, experiment, "control", tenant, 60), tenant, up=True)
    [event] = watcher.check()
    assert event["rule"] == "feedback_positive_rate" and event["tenants"] == 3 and event["p_value"] <= 0.05
    assert "without any one of its 3 tenants" in event["summary"]
    state = ReleaseStore(store).state("up")
    assert state is not None and state.arms is None


def test_one_tenants_guard_flags_do_not_roll_back_but_the_operators_traffic_decides_alone(
    store: SqlRecordStore,
) -> None:
    watcher = AutoRollback(parse_config({}), lambda: store)
    experiment = _canary(store)
    _records(store, experiment, "canary", "hostile", 200, flagged=100)  # injection attempts in the canary
    _records(store, experiment, "control", "hostile", 200)
    _records(store, experiment, "canary", "other", 100)
    _records(store, experiment, "control", "other", 100)
    assert watcher.check() == []
    # The operator's traffic (auth off, or an operator key) is never left out: it is not a tenant's word.
    _records(store, experiment, "canary", None, 200, flagged=60)
    _records(store, experiment, "control", None, 200)
    [event] = watcher.check()
    assert event["rule"] == "guard_flag_rate" and event["tenants"] == 2


def test_a_tenant_cannot_roll_back_the_canary_over_http(upstream: FakeUpstream) -> None:
    """The probe: a tenant's service key rates its canary answers down three times each, its control
    answers up; another tenant uses the alias too. The canary stays, and nothing pages."""
    config = {
        "auth": {"enabled": True, "admin_key": ADMIN},
        # The watcher is called directly below (deterministic), so its timer is slow.
        "releases": {"poll_seconds": 0.2, "auto_rollback": {"enabled": True, "interval_seconds": 3600}},
        "models": [{"name": "up", "routing": {"retries": 0}, "deployments": [
            {"type": "openai", "base_url": upstream.base_url, "model": "m", "breaker": {"enabled": False}}]}],
    }  # fmt: skip
    gateway = start_gateway(config)
    http = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    try:
        first = http.post("/admin/releases", json={"alias": "up", "parameters": {"max_tokens": 50}, "activate": True})
        second = http.post("/admin/releases", json={"alias": "up", "parameters": {"max_tokens": 60}})
        assert first.status_code == second.status_code == 201, (first.text, second.text)
        canary = http.post("/admin/releases/up/canary", json={"release": second.json()["id"], "weight": 50})
        assert canary.status_code == 200, canary.text
        app = gateway.app.state.gateway
        store_clock = ReleaseStore(app.record_log.store).clock()
        assert wait_until(lambda: app.releases.clock >= store_clock, timeout=20)

        def key(tenant: str) -> dict[str, str]:
            made = http.post("/admin/keys", json={"tenant": tenant, "role": "service", "name": tenant})
            assert made.status_code == 201, made.text
            return {"Authorization": f"Bearer {made.json()['secret']}"}

        hostile, bystander = key("hostile"), key("bystander")

        def chat(headers: dict[str, str], user: str) -> str:
            body = {"model": "up", "messages": [{"role": "user", "content": "hi"}], "user": user}
            response = http.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 200, response.text
            return str(response.headers["x-request-id"])

        ids = [chat(hostile, f"u{i}") for i in range(80)]
        for i in range(60):
            chat(bystander, f"b{i}")
        assert app.record_log.writer.flush(timeout=60)
        arms = {rid: http.get(f"/admin/requests/{rid}").json()["arm"] for rid in ids}
        assert set(arms.values()) == {"canary", "control"}
        for rid, arm in arms.items():
            for _ in range(3):
                rated = http.post(
                    "/v1/feedback",
                    json={"request_id": rid, "score": "down" if arm == "canary" else "up"},
                    headers=hostile,
                )
                assert rated.status_code == 201, rated.text
        assert app.rollback.check() == []
        state = http.get("/admin/releases/up").json()["state"]
        assert state["arms"] is not None and state["experiment"] == canary.json()["experiment"]
        assert not [a for a in http.get("/admin/alerts").json()["data"] if a["slo"] == "release:up"]
        report = http.get(f"/admin/experiments/{state['experiment']}").json()
        rated_requests = report["arms"]["canary"]["feedback"]["rated"] + report["arms"]["control"]["feedback"]["rated"]
        assert rated_requests == 80  # one rating per request, not three
    finally:
        http.close()
        gateway.server.stop()
