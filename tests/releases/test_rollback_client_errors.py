"""The canary's error budget is not the client's to spend (probe-e p3: one tenant's service key, sending
long-answer requests from the users it found on the canary, got 502 AnswerTooLarge on 30 of them and the
burn-rate rule rolled the operator's canary back for every tenant, with a page).

- An answer past the deployment's size bounds (the breaker spares it: the client may have asked for it) is
  not an error of the canary.
- The burn-rate rule holds without each tenant in turn, as the quality rules do; with a single tenant on
  the alias, the plain rule (a single-tenant deployment still rolls a broken canary back).

Store-level tests on SQLite and PostgreSQL, then the probe over real HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.domain.config import parse_config
from opsgate.releases import metrics
from opsgate.releases.rollback import AutoRollback
from opsgate.releases.store import ReleaseStore
from opsgate.store.sql import SqlRecordStore
from tests.fake_upstream import FakeUpstream, Script
from tests.releases.conftest import start_canary, write_records
from tests.support import start_gateway, wait_until

ADMIN = "bootstrap-admin-key-for-rollback-client-errors-0123"
TOO_LARGE = {"answer_too_large": {"limit": "max_response_bytes", "bytes": 65536}}


def _watcher(store: SqlRecordStore) -> AutoRollback:
    return AutoRollback(parse_config({}), lambda: store)  # min_requests 20, 14.4x of a 0.99 target


def _canary_running(store: SqlRecordStore) -> bool:
    state = ReleaseStore(store).state("up")
    return state is not None and state.arms is not None


def test_answers_too_large_are_not_canary_errors(any_store: SqlRecordStore) -> None:
    experiment = start_canary(any_store)
    write_records(any_store, experiment, "canary", "evil", 40, status=502, tags=TOO_LARGE)
    write_records(any_store, experiment, "canary", "evil", 10)
    write_records(any_store, experiment, "control", "evil", 50)
    arm = metrics.collect(any_store, "up", experiment, 0.0)["canary"]
    assert (arm.requests, arm.errors, arm.client_errors, arm.judged) == (50, 0, 40, 10)
    assert _watcher(any_store).check() == []  # one tenant, so the plain rule: nothing burns
    assert _canary_running(any_store)


def test_one_tenants_server_errors_do_not_roll_back_for_everyone(any_store: SqlRecordStore) -> None:
    experiment = start_canary(any_store)
    write_records(any_store, experiment, "canary", "evil", 40, status=502)  # say, long generations timing out
    write_records(any_store, experiment, "canary", "good", 30)
    write_records(any_store, experiment, "control", "good", 30)
    assert _watcher(any_store).check() == []
    assert _canary_running(any_store)


def test_errors_of_several_tenants_roll_back_and_the_reason_names_them(any_store: SqlRecordStore) -> None:
    experiment = start_canary(any_store)
    for tenant, failed in (("a", 25), ("b", 22), ("c", 21)):
        write_records(any_store, experiment, "canary", tenant, failed, status=502)
        write_records(any_store, experiment, "canary", tenant, 5)
        write_records(any_store, experiment, "control", tenant, 30)
    [event] = _watcher(any_store).check()
    assert event["rule"] == "burn_rate" and event["tenants"] == 3
    assert event["errors_by_tenant"] == [
        {"tenant": "a", "errors": 25},
        {"tenant": "b", "errors": 22},
        {"tenant": "c", "errors": 21},
    ]
    assert "without any one of its 3 tenants" in event["summary"]
    assert not _canary_running(any_store)
    reason = ReleaseStore(any_store).history("up")[0]["details"]["reason"]
    assert "a: 25, b: 22, c: 21" in reason


@pytest.mark.parametrize("tenant", ["solo", None])
def test_a_single_tenant_deployment_still_rolls_a_broken_canary_back(
    any_store: SqlRecordStore, tenant: str | None
) -> None:
    experiment = start_canary(any_store)
    write_records(any_store, experiment, "canary", tenant, 30, status=500)
    write_records(any_store, experiment, "control", tenant, 30)
    [event] = _watcher(any_store).check()
    assert event["rule"] == "burn_rate" and event["tenants"] == 0
    assert event["errors_by_tenant"] == [{"tenant": tenant, "errors": 30}]
    assert not _canary_running(any_store)


@pytest.fixture()
def verbose_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    server.script = Script(content="word " * 20_000)  # 100 KB: past the canary's 64 KiB bound
    yield server
    server.stop()


def test_a_tenant_cannot_roll_back_the_canary_with_answers_too_large(
    upstream: FakeUpstream, verbose_upstream: FakeUpstream
) -> None:
    """The probe: a service key's requests that land on the canary get an answer past its size bound."""
    deployment: dict[str, Any] = {"type": "openai", "model": "m", "breaker": {"enabled": False}}
    config = {
        "auth": {"enabled": True, "admin_key": ADMIN},
        "releases": {"poll_seconds": 0.2, "auto_rollback": {"enabled": True, "interval_seconds": 3600}},
        "models": [{"name": "up", "routing": {"retries": 0}, "deployments": [
            {**deployment, "base_url": upstream.base_url},
            {**deployment, "base_url": verbose_upstream.base_url, "max_response_bytes": 65536}]}],
    }  # fmt: skip
    gateway = start_gateway(config)
    http = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    try:
        first = http.post("/admin/releases", json={"alias": "up", "deployments": {"up#0": 1}, "activate": True})
        second = http.post("/admin/releases", json={"alias": "up", "deployments": {"up#1": 1}})
        assert first.status_code == second.status_code == 201, (first.text, second.text)
        canary = http.post("/admin/releases/up/canary", json={"release": second.json()["id"], "weight": 50})
        assert canary.status_code == 200, canary.text
        app = gateway.app.state.gateway
        store_clock = ReleaseStore(app.record_log.store).clock()
        assert wait_until(lambda: app.releases.clock >= store_clock, timeout=20)
        made = http.post("/admin/keys", json={"tenant": "evil", "role": "service", "name": "evil"})
        assert made.status_code == 201, made.text
        evil = {"Authorization": f"Bearer {made.json()['secret']}"}
        too_large = 0
        for i in range(120):
            body = {"model": "up", "messages": [{"role": "user", "content": "write a lot"}], "user": f"e{i}"}
            response = http.post("/v1/chat/completions", json=body, headers=evil)
            if response.headers.get("x-opsgate-deployment") == "up#1" or response.status_code == 502:
                assert response.status_code == 502, response.text
                assert response.json()["error"]["code"] == "upstream_bad_response"
                too_large += 1
        assert too_large >= 30
        assert app.record_log.writer.flush(timeout=60)
        assert app.rollback.check() == []
        state = http.get("/admin/releases/up").json()["state"]
        assert state["arms"] is not None and state["experiment"] == canary.json()["experiment"]
        assert not [a for a in http.get("/admin/alerts").json()["data"] if a["slo"] == "release:up"]
        report = http.get(f"/admin/experiments/{state['experiment']}").json()
        assert report["arms"]["canary"]["errors"] == 0 and report["arms"]["canary"]["requests"] == too_large
    finally:
        http.close()
        gateway.server.stop()


def test_cache_hits_count_as_requests_but_not_in_an_arms_latency(any_store: SqlRecordStore) -> None:
    # Before, 30 hits at 0.5 ms beside 10 real answers at 50 ms made the canary's p50 0.5 ms: an arm whose
    # users repeat themselves looked faster than its model is.
    experiment = start_canary(any_store)
    write_records(any_store, experiment, "canary", "t", 10, latency_ms=50.0)
    write_records(any_store, experiment, "canary", "t", 30, cached=True, latency_ms=0.5)
    arm = metrics.collect(any_store, "up", experiment, 0.0)["canary"]
    summary = arm.summary()
    assert (summary["requests"], summary["cache_hits"]) == (40, 30)
    assert summary["latency_ms"]["p50"] == 50.0 and len(arm.latency) == 10
    assert arm.judged == 10  # nor in the error rate's denominator (review: hits diluted a failing canary)


def test_per_tenant_rows_leave_cache_hits_out_too(any_store: SqlRecordStore) -> None:
    # Second review: judged left hits out but the per-tenant rows did not, so leaving out a tenant whose
    # requests were mostly hits gave a negative denominator (200 - 1000 + ...), and the burn rule gave up.
    from opsgate.releases.rollback import burn_rows

    experiment = start_canary(any_store)
    write_records(any_store, experiment, "canary", "a", 100)
    write_records(any_store, experiment, "canary", "a", 900, cached=True, latency_ms=0.5)
    write_records(any_store, experiment, "canary", "b", 100)
    canary = metrics.collect(any_store, "up", experiment, 0.0)["canary"]
    _, judged = burn_rows(canary, ["a", "b"])
    assert judged.tolist() == [200.0, 100.0, 100.0]
