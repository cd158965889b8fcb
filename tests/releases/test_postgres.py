"""Two gateways on one PostgreSQL agree on the active release within a poll; changes are serialised."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from opsgate.domain.config import parse_config
from opsgate.domain.errors import GatewayError
from opsgate.releases.store import ReleaseStore
from opsgate.store.record_log import open_store
from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, wait_until

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN = "bootstrap-admin-key-for-pg-releases-0123456789"


@pytest.fixture()
def pg_url() -> Iterator[str]:
    schema = f"opsgate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _gateway(pg_url: str, upstream: str) -> Gateway:
    config = parse_config(
        {
            "auth": {"enabled": True, "admin_key": ADMIN},
            "record": {"store": pg_url},
            "releases": {"poll_seconds": 0.5},
            "models": [
                {
                    "name": "up",
                    "routing": {"retries": 0},
                    "deployments": [
                        {"type": "openai", "base_url": upstream, "model": "m0"},
                        {"type": "openai", "base_url": upstream, "model": "m1"},
                    ],
                }
            ],
        }
    )
    gateway = Gateway(config)
    gateway.server.start("/readyz", timeout=60)
    return gateway


def _call(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, gateway.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30, **kwargs)


def _served(gateway: Gateway, user: str) -> tuple[str, str | None]:
    body = {"model": "up", "messages": [{"role": "user", "content": "hi"}], "user": user}
    response = _call(gateway, "POST", "/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    record = gateway.records_for(response.headers["x-request-id"])[0]
    return record["deployment"], record["tags"].get("release")


def test_two_gateways_agree_on_the_active_release(pg_url: str, upstream: FakeUpstream) -> None:
    one, two = _gateway(pg_url, upstream.base_url), _gateway(pg_url, upstream.base_url)
    try:
        created = _call(one, "POST", "/admin/releases", json={"alias": "up", "deployments": {"up#1": 1}})
        assert created.status_code == 201, created.text
        release = created.json()["id"]
        changed = time.monotonic()
        assert _call(one, "POST", "/admin/releases/up/activate", json={"release": release}).status_code == 200
        caches = [g.app.state.gateway.releases for g in (one, two)]
        assert wait_until(lambda: all("up" in c.aliases for c in caches), timeout=20)
        seen = time.monotonic() - changed
        assert seen < 5.0, seen  # within a few polls, on a loaded machine
        for gateway in (one, two):
            for n in range(5):
                assert _served(gateway, f"u{n}") == ("up#1", release)
        # A canary started through the other replica reaches both, with the same arms for the same users.
        second = _call(two, "POST", "/admin/releases", json={"alias": "up", "deployments": {"up#0": 1}}).json()["id"]
        assert (
            _call(two, "POST", "/admin/releases/up/canary", json={"release": second, "weight": 50}).status_code == 200
        )
        assert wait_until(lambda: all(len(c.aliases["up"].arms) == 2 for c in caches), timeout=20)
        for n in range(10):
            assert _served(one, f"user-{n}") == _served(two, f"user-{n}")
        assert _call(one, "POST", "/admin/releases/up/rollback", json={}).status_code == 200
        assert wait_until(lambda: all(len(c.aliases["up"].arms) == 1 for c in caches), timeout=20)
        assert _served(two, "user-1") == ("up#1", release)
    finally:
        one.server.stop()
        two.server.stop()


def test_concurrent_changes_are_serialised(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        releases = ReleaseStore(store)
        spec: dict[str, Any] = {"deployments": None, "prompt": None, "parameters": {}}
        ids = [releases.create("up", spec, None, "t").id for _ in range(4)]
        releases.activate("up", ids[0], "t")
        start = releases.state("up")
        assert start is not None
        wins: list[str] = []
        losses: list[str] = []

        def canary(release: str) -> None:
            try:
                releases.canary("up", release, 10, "t", expect=start.revision)
                wins.append(release)
            except GatewayError as error:
                losses.append(error.message)

        threads = [threading.Thread(target=canary, args=(r,)) for r in ids[1:]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(wins) == 1 and len(losses) == 2  # one change per revision, the others told to look again
        state = releases.state("up")
        assert state is not None and state.revision == start.revision + 1
        assert releases.clock() >= 2
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_experiment_metrics_read_eval_scores_but_not_shadow_ones(kind: str, pg_url: str, tmp_path: Any) -> None:
    """The arm metrics join eval scores on both stores (a literal '%' in the SQL was a 500 on PostgreSQL)."""
    from opsgate.releases.metrics import collect

    url = pg_url if kind == "postgres" else f"sqlite:///{tmp_path}/metrics.db"
    store = open_store(url)
    now = time.time()
    with store.connection() as conn, store.transaction(conn):
        for rid, arm in (("req-a", "control"), ("req-b", "canary")):
            store.execute(
                conn,
                "INSERT INTO requests (id, ts, endpoint, model, status, experiment, arm, latency_ms) "
                "VALUES (?, ?, 'chat', 'up', 200, 'exp_1', ?, 12.0)",
                [rid, now, arm],
            )
            store.execute(
                conn,
                "INSERT INTO feedback (id, ts, request_id, model, raw_score, score, positive) "
                "VALUES (?, ?, ?, 'up', '1', 1, 1)",
                [f"fb-{rid}", now, rid],
            )
        for run, value in (("online:1", 0.9), ("shadow:1", 0.1)):
            store.execute(
                conn,
                "INSERT INTO eval_items (run_id, item_key, ts, model, request_id, status) "
                "VALUES (?, 'k', ?, 'up', 'req-b', 'ok')",
                [run, now],
            )
            store.execute(
                conn,
                "INSERT INTO eval_scores (run_id, item_key, scorer, ts, model, value) "
                "VALUES (?, 'k', 'judge', ?, 'up', ?)",
                [run, now, value],
            )
    arms = collect(store, "up", "exp_1", now - 60)
    assert arms["canary"].scores["judge"] == [0.9]  # the shadow run's 0.1 is not the live arm's
    assert arms["control"].rated == 1 and arms["canary"].positive == 1
    store.close()
