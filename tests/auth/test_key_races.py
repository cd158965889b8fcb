"""Key changes racing each other (probe-g G5, G6): revoke vs rotate, and one key rotated several times at once.

Real stores. On PostgreSQL the races are made deterministic: the test holds the audit chain's
advisory lock, starts the changes one by one (each waits until the previous one is seen waiting in
``pg_locks``), then lets go. Before the fix a revoke updated the row and then waited for the chain
lock while a rotation held that lock and waited for the row (deadlock, one of them a 500), a rotation
queued behind a revoke still minted a successor of the revoked key, and four rotations of one key
minted four live successors.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from click.testing import CliRunner

from opsgate.audit.chain import APPEND_LOCK
from opsgate.auth.key_store import KeyNotActive, KeySpec, KeyStore
from opsgate.store.record_log import open_store
from tests.store.conftest import PG_ADMIN_URL, fresh_pg_schema, pg_url, store_url  # noqa: F401  (fixtures)
from tests.support import start_gateway

DEADLINE = 60.0  # generous: a loaded machine
ADMIN_KEY = "bootstrap-admin-key-for-tests-0123456789"


@pytest.fixture()
def keys(store_url: str) -> Iterator[KeyStore]:  # noqa: F811
    store = KeyStore(open_store(store_url))
    yield store
    store.store.close()


def test_a_key_rotates_once(keys: KeyStore) -> None:
    created = keys.create(KeySpec(tenant="acme", role="developer"), "alice", max_per_tenant=10)
    successor = keys.rotate(created.info.key_id, "alice", grace_seconds=3600, max_per_tenant=10)
    with pytest.raises(KeyNotActive) as refused:  # in its grace period, but already rotated
        keys.rotate(created.info.key_id, "alice", grace_seconds=3600, max_per_tenant=10)
    assert refused.value.status == 409 and refused.value.code == "key_not_active"
    assert successor.info.key_id in refused.value.message
    keys.revoke(successor.info.key_id, "alice")
    with pytest.raises(KeyNotActive):
        keys.rotate(successor.info.key_id, "alice", grace_seconds=0)
    assert len(keys.list("acme")) == 2  # no third key
    assert keys.require(created.info.key_id).rotated_to == successor.info.key_id


def test_concurrent_rotations_of_one_key_mint_one_successor(keys: KeyStore) -> None:
    created = keys.create(KeySpec(tenant="acme", role="service"), "alice", max_per_tenant=10)
    key_id = created.info.key_id
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(keys.rotate, key_id, "alice", 3600.0, None, 10) for _ in range(4)]
        outcomes = [_outcome(f) for f in futures]
    assert sorted(outcomes) == ["KeyNotActive"] * 3 + ["ok"], outcomes
    assert len(keys.list("acme")) == 2


def _outcome(future: Future[Any]) -> str:
    error = future.exception(DEADLINE)
    return "ok" if error is None else type(error).__name__


class ChainGate:
    """Holds the audit chain's advisory lock on PostgreSQL and sees who waits for it (our connections only)."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.conn = psycopg.connect(PG_ADMIN_URL, autocommit=True)
        self.conn.execute("SELECT pg_advisory_lock(%s)", [APPEND_LOCK])

    def waiting(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.application_name = %s",
            [self.app],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + DEADLINE
        while self.waiting() < count:
            assert time.monotonic() < deadline, f"{self.waiting()} of {count} changes reached the lock"
            time.sleep(0.01)

    def release(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", [APPEND_LOCK])
        self.conn.close()


@pytest.fixture()
def pg_keys() -> Iterator[tuple[KeyStore, str]]:
    app = f"opsgate-test-{uuid.uuid4().hex[:8]}"
    with fresh_pg_schema() as url:
        store = KeyStore(open_store(f"{url}&application_name={app}"))
        try:
            yield store, app
        finally:
            store.store.close()


def _queued(keys: KeyStore, app: str, changes: list[Callable[[], Any]]) -> list[Future[Any]]:
    """Run ``changes`` in this order, each queued behind the chain lock, then release it; their futures."""
    gate = ChainGate(app)
    pool = ThreadPoolExecutor(len(changes))
    futures: list[Future[Any]] = []
    try:
        for index, change in enumerate(changes):
            futures.append(pool.submit(change))
            gate.wait_for(index + 1)  # before the fix a revoke waited here holding the row already
    finally:
        gate.release()
        pool.shutdown(wait=False)
    for future in futures:
        future.exception(DEADLINE)
    return futures


def test_rotate_then_revoke_queued_on_postgres(pg_keys: tuple[KeyStore, str]) -> None:
    keys, app = pg_keys
    key_id = keys.create(KeySpec(tenant="acme", role="service"), "alice").info.key_id
    rotate, revoke = _queued(
        keys,
        app,
        [
            lambda: keys.rotate(key_id, "alice", 3600.0, None, 1000),
            lambda: keys.revoke(key_id, "bob"),
        ],
    )
    assert rotate.exception() is None and revoke.exception() is None, (rotate.exception(), revoke.exception())
    old = keys.require(key_id)
    successor = rotate.result().info.key_id
    assert old.state() == "revoked" and old.rotated_to == successor
    assert keys.require(successor).state() == "active"


def test_revoke_then_rotate_queued_on_postgres(pg_keys: tuple[KeyStore, str]) -> None:
    keys, app = pg_keys
    key_id = keys.create(KeySpec(tenant="acme", role="service"), "alice").info.key_id
    revoke, rotate = _queued(
        keys,
        app,
        [
            lambda: keys.revoke(key_id, "bob"),
            lambda: keys.rotate(key_id, "alice", 3600.0, None, 1000),
        ],
    )
    assert revoke.exception() is None
    assert isinstance(rotate.exception(), KeyNotActive), rotate.exception()  # no successor of a revoked key
    assert [k.key_id for k in keys.list("acme")] == [key_id]


def test_four_rotations_queued_on_postgres_mint_one_successor(pg_keys: tuple[KeyStore, str]) -> None:
    keys, app = pg_keys
    key_id = keys.create(KeySpec(tenant="acme", role="service"), "alice").info.key_id
    rotations = _queued(keys, app, [lambda: keys.rotate(key_id, "alice", 3600.0, None, 1000)] * 4)
    assert sorted(_outcome(f) for f in rotations) == ["KeyNotActive"] * 3 + ["ok"]
    assert len(keys.list("acme")) == 2
    assert keys.store.audit_entries(20)[0]["action"] == "key_rotate"


def test_admin_route_answers_409_in_the_openai_shape() -> None:
    gateway = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN_KEY},
            "models": [
                {
                    "name": "alpha",
                    "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
                }
            ],
        }
    )
    try:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=DEADLINE) as client:
            created = client.post("/admin/keys", json={"tenant": "acme", "role": "service"}).json()
            first = client.post(f"/admin/keys/{created['id']}/rotate", json={})
            assert first.status_code == 201, first.text
            again = client.post(f"/admin/keys/{created['id']}/rotate", json={})
            assert again.status_code == 409, again.text
            error = again.json()["error"]
            assert error["code"] == "key_not_active" and error["type"] == "invalid_request_error"
            assert first.json()["id"] in error["message"]
    finally:
        gateway.server.stop()


def test_cli_refuses_a_second_rotation_clearly(tmp_path: Path) -> None:
    from tests.cli.test_keys_bounds import _config

    config = _config(tmp_path)
    store = KeyStore(open_store(f"sqlite:///{tmp_path / 'requests.db'}"))
    try:
        key_id = store.create(KeySpec(tenant="acme", role="service"), "test").info.key_id
    finally:
        store.store.close()
    from opsgate.cli.keys import keys as keys_cli

    cli = CliRunner()
    assert cli.invoke(keys_cli, ["rotate", "--config", config, key_id]).exit_code == 0
    again = cli.invoke(keys_cli, ["rotate", "--config", config, key_id])
    assert again.exit_code != 0 and "already rotated" in again.output, again.output
    assert "Traceback" not in again.output
