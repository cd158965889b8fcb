"""Activating a release while a canary runs ends its experiment too, and stopping an experiment by id never
stops another one (probe-e p11: the activate dropped the arms but left the experiment ``running`` forever,
47 such rows after the p10 races on SQLite, 29 on PostgreSQL; ``POST /admin/experiments/{old}/stop`` then
stopped the alias's current, different experiment).

Store-level tests on SQLite and PostgreSQL, then the probe over real HTTP.
"""

from __future__ import annotations

import time

import httpx
import pytest

from opsgate.domain.errors import GatewayError
from opsgate.releases.store import ReleaseStore
from opsgate.store.sql import SqlRecordStore
from tests.fake_upstream import FakeUpstream
from tests.releases.conftest import SPEC, start_canary
from tests.support import start_gateway

ADMIN = "bootstrap-admin-key-for-experiment-orphans-0123"


def _running(store: SqlRecordStore) -> list[str]:
    return [e["id"] for e in ReleaseStore(store).experiments("up") if e["status"] == "running"]


def _orphan(store: SqlRecordStore) -> str:
    """A row left ``running`` without arms, as an activate before this fix left one."""
    with store.connection() as conn, store.transaction(conn):
        store.execute(
            conn,
            "INSERT INTO release_experiments (id, alias, kind, arms, status, settings, started_at, created_by) "
            "VALUES (?,?,?,?,?,?,?,?)",
            ["exp_orphan", "up", "canary", "[]", "running", "{}", time.time() - 60, "t"],
        )
    return "exp_orphan"


def test_activate_during_a_canary_stops_its_experiment(any_store: SqlRecordStore) -> None:
    releases = ReleaseStore(any_store)
    experiment = start_canary(any_store)
    third = releases.create("up", SPEC, None, "t")
    state = releases.activate("up", third.id, "t")
    assert state.arms is None and state.experiment is None and state.active == third.id
    found = releases.experiment(experiment)
    assert found is not None and found["status"] == "stopped" and found["stopped_at"] is not None
    assert found["verdict"] == {"ended_by": "activate", "activated": third.id}
    assert _running(any_store) == []
    last = releases.history("up")[0]
    assert last["action"] == "activated" and last["details"]["experiment_stopped"] == experiment


def test_stop_by_id_never_stops_another_experiment(any_store: SqlRecordStore) -> None:
    releases = ReleaseStore(any_store)
    first = start_canary(any_store)
    releases.stop_experiment("up", "t", experiment=first)
    candidate = releases.list_all("up")[0]
    second = releases.canary("up", candidate.id, 10, "t").experiment
    with pytest.raises(GatewayError) as refused:
        releases.stop_experiment("up", "t", experiment=first)  # a stale id: the alias runs `second`
    assert refused.value.status == 409 and refused.value.code == "experiment_not_current"
    assert refused.value.to_body()["error"]["type"] == "invalid_request_error"
    assert _running(any_store) == [second]
    orphan = _orphan(any_store)
    state = releases.stop_experiment("up", "t", experiment=orphan)  # closed; the alias's canary runs on
    assert state.experiment == second and state.arms is not None
    found = releases.experiment(orphan)
    assert found is not None and found["status"] == "stopped" and found["verdict"] == {"orphaned": True}
    assert _running(any_store) == [second]


def test_over_http_activate_ends_the_experiment_and_stop_hits_only_the_named_one(upstream: FakeUpstream) -> None:
    config = {
        "auth": {"enabled": True, "admin_key": ADMIN},
        "releases": {"auto_rollback": {"enabled": False}},
        "models": [{"name": "up", "routing": {"retries": 0}, "deployments": [
            {"type": "openai", "base_url": upstream.base_url, "model": "m0"},
            {"type": "openai", "base_url": upstream.base_url, "model": "m1"}]}],
    }  # fmt: skip
    gateway = start_gateway(config)
    http = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    try:
        ids = []
        for i in range(3):
            made = http.post("/admin/releases", json={"alias": "up", "deployments": {f"up#{i % 2}": 1}})
            assert made.status_code == 201, made.text
            ids.append(made.json()["id"])
        assert http.post("/admin/releases/up/activate", json={"release": ids[0]}).status_code == 200
        first = http.post("/admin/releases/up/canary", json={"release": ids[1], "weight": 10}).json()["experiment"]
        assert http.post("/admin/releases/up/activate", json={"release": ids[2]}).status_code == 200
        assert http.get(f"/admin/experiments/{first}").json()["experiment"]["status"] == "stopped"
        second = http.post("/admin/releases/up/canary", json={"release": ids[1], "weight": 10}).json()["experiment"]
        stale = http.post(f"/admin/experiments/{first}/stop")
        assert stale.status_code == 404 and stale.json()["error"]["code"] == "experiment_not_found"
        assert http.get(f"/admin/experiments/{second}").json()["experiment"]["status"] == "running"
        orphan = _orphan(gateway.app.state.gateway.record_log.store)
        closed = http.post(f"/admin/experiments/{orphan}/stop")
        assert closed.status_code == 200 and closed.json()["experiment"] == second, closed.text
        assert http.get(f"/admin/experiments/{orphan}").json()["experiment"]["status"] == "stopped"
        running = [e["id"] for e in http.get("/admin/experiments").json()["data"] if e["status"] == "running"]
        assert running == [second]
        assert http.post(f"/admin/experiments/{second}/stop").json()["experiment"] is None
    finally:
        http.close()
        gateway.server.stop()
