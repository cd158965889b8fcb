"""Dashboard sessions on a real SQLite file and a real PostgreSQL schema, with a clock the test moves."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsgate.auth.session_store import MemorySessionStore, SessionStore, SqlSessionStore
from opsgate.auth.ui_sessions import UiSessions, id_hash, valid_session_id
from opsgate.domain.auth_config import UiSessionConfig
from opsgate.domain.principal import Principal
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore
from tests.store.conftest import pg_url, store, store_url  # noqa: F401 - fixtures

ALICE = Principal(key_id="key_alice", tenant="acme", role="viewer", name="alice")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _sessions(backing: SessionStore, cache_ttl: float = 30.0) -> tuple[UiSessions, Clock]:
    clock = Clock()
    config = UiSessionConfig(lifetime_seconds=3600, idle_seconds=600)
    return UiSessions(config, backing, cache_ttl, clock), clock


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def backing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore()
        return
    url = f"sqlite:///{tmp_path}/s.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    sql = open_store(url)
    yield SqlSessionStore(lambda: sql)
    sql.close()


def test_a_session_lives_until_idle_or_its_lifetime(backing: SessionStore) -> None:
    async def scenario() -> None:
        sessions, clock = _sessions(backing)
        session_id = await sessions.create(ALICE)
        assert valid_session_id(session_id) and len(session_id) == 43
        row = await sessions.resolve(session_id)
        assert row is not None and (row.key_id, row.tenant) == ("key_alice", "acme")
        clock.now += 599
        assert await sessions.resolve(session_id) is not None  # used: the idle time starts again
        sessions.forget()  # the store's last_seen was moved, not only the cache's
        clock.now += 599
        assert await sessions.resolve(session_id) is not None
        clock.now += 600
        assert await sessions.resolve(session_id) is None
        assert backing.get(id_hash(session_id)) is None  # found idle: deleted

        busy = await sessions.create(ALICE)
        for _ in range(11):
            clock.now += 300
            assert await sessions.resolve(busy) is not None
        clock.now += 301
        assert await sessions.resolve(busy) is None  # past the lifetime however busy

    asyncio.run(scenario())


def test_logout_deletes_the_row_and_the_cache_entry(backing: SessionStore) -> None:
    async def scenario() -> None:
        sessions, _ = _sessions(backing)
        session_id = await sessions.create(ALICE)
        assert await sessions.resolve(session_id) is not None  # cached now
        await sessions.end(session_id)
        assert await sessions.resolve(session_id) is None
        assert backing.get(hashlib.sha256(session_id.encode()).hexdigest()) is None

    asyncio.run(scenario())


def test_another_replicas_cache_lets_go_within_its_ttl(backing: SessionStore) -> None:
    async def scenario() -> None:
        here, clock = _sessions(backing, cache_ttl=5)
        there, _ = _sessions(backing, cache_ttl=5)
        there.clock = clock
        session_id = await here.create(ALICE)
        assert await there.resolve(session_id) is not None
        await here.end(session_id)
        for _ in range(4):  # used all along: the cache's deadline does not move with use
            clock.now += 1
            assert await there.resolve(session_id) is not None
        clock.now += 1.5
        assert await there.resolve(session_id) is None

    asyncio.run(scenario())


def test_malformed_ids_never_reach_the_store() -> None:
    class Refusing(MemorySessionStore):
        def get(self, id_hash: str) -> None:
            raise AssertionError("read the store")

    async def scenario() -> None:
        sessions, _ = _sessions(Refusing())
        for value in (None, "", "a" * 257, "é" * 43, "a\x00" * 20, "short", "a b" * 20, "og_x;y" * 10):
            assert await sessions.resolve(value) is None
            await sessions.end(value)

    asyncio.run(scenario())


def test_sweep_removes_expired_and_idle_rows(store: SqlRecordStore) -> None:  # noqa: F811
    async def scenario() -> None:
        backing = SqlSessionStore(lambda: store)
        sessions, clock = _sessions(backing)
        old = await sessions.create(ALICE)
        clock.now += 601
        fresh = await sessions.create(ALICE)  # each login sweeps
        assert backing.get(id_hash(old)) is None and backing.get(id_hash(fresh)) is not None

    asyncio.run(scenario())


def test_a_key_holds_at_most_max_per_key_sessions_the_oldest_goes(backing: SessionStore) -> None:
    # Probe 2026-12-06 L3: 300 logins of one key were 300 rows.
    async def scenario() -> None:
        config = UiSessionConfig(lifetime_seconds=3600, idle_seconds=600, max_per_key=3)
        clock = Clock()
        sessions = UiSessions(config, backing, 30.0, clock)
        bob = Principal(key_id="key_bob", tenant="acme", role="viewer", name="bob")
        other = await sessions.create(bob)
        made = []
        for _ in range(5):
            clock.now += 1
            made.append(await sessions.create(ALICE))
            assert await sessions.resolve(made[-1]) is not None  # cached here too
        for old in made[:2]:  # evicted: gone from the store and from this replica's cache
            assert backing.get(id_hash(old)) is None
            assert await sessions.resolve(old) is None
        for kept in made[2:]:
            assert await sessions.resolve(kept) is not None
        assert await sessions.resolve(other) is not None  # another key's sessions are not touched

    asyncio.run(scenario())


def test_max_per_key_is_bounded() -> None:
    for wrong in (0, 1001):
        with pytest.raises(ValueError):
            UiSessionConfig(max_per_key=wrong)
