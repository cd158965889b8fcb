"""The writer asks each store which errors mean "down, retry later" (store/sqlite.py, store/postgres.py).

Before, it matched class names (``OperationalError``, ``InterfaceError``, ...) across every library:
``sqlite3.InterfaceError`` (a value SQLite cannot bind: the line's fault) counted as the store being
down, so one such line blocked the journal for every record behind it, forever.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import psycopg_pool
import pytest

from opsgate.store.failures import refused_data, store_down
from opsgate.store.journal import Journal
from opsgate.store.postgres import PostgresRecordStore
from opsgate.store.query import RecordQuery
from opsgate.store.rejected import REJECTED_NAME, append_rejected, replay_rejected
from opsgate.store.sqlite import SqliteRecordStore
from opsgate.store.writer import RecordWriter
from tests.support import wait_until


def line(rid: str, model: str = "m") -> bytes:
    return (
        orjson.dumps({"id": rid, "ts": time.time(), "endpoint": "chat", "model": model, "status": 200, "user_id": "u"})
        + b"\n"
    )


def test_each_store_declares_its_own_transient_and_refused_errors(tmp_path: Path) -> None:
    sqlite_store = SqliteRecordStore(tmp_path / "r.db")
    try:
        assert store_down(sqlite_store, sqlite3.OperationalError("database is locked"))
        assert store_down(sqlite_store, ConnectionResetError())
        assert not store_down(sqlite_store, sqlite3.InterfaceError("Error binding parameter 3"))
        assert not store_down(sqlite_store, psycopg.OperationalError("not this store's error"))
        assert refused_data(sqlite_store, sqlite3.IntegrityError("CHECK constraint failed"))
        assert not refused_data(sqlite_store, sqlite3.OperationalError("disk I/O error"))
    finally:
        sqlite_store.close()
    assert issubclass(psycopg_pool.PoolTimeout, PostgresRecordStore.transient_errors)
    assert issubclass(psycopg.errors.AdminShutdown, PostgresRecordStore.transient_errors)
    assert issubclass(psycopg.InterfaceError, PostgresRecordStore.transient_errors)
    assert issubclass(psycopg.errors.StringDataRightTruncation, PostgresRecordStore.refused_data_errors)
    assert not issubclass(sqlite3.OperationalError, PostgresRecordStore.transient_errors)


class BindingRefusingStore(SqliteRecordStore):
    """A real SQLite store that cannot bind one model's rows (as sqlite3 answers an unbindable value)."""

    def write_lines(self, lines: list[bytes]) -> int:
        if any(b'"model":"unbindable"' in one for one in lines):
            raise sqlite3.InterfaceError("Error binding parameter 7: type 'x' is not supported")
        return super().write_lines(lines)


@pytest.fixture()
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / "journal")
    opened.open()
    yield opened
    opened.close()


def test_a_line_the_store_cannot_bind_is_set_aside_not_a_store_outage(tmp_path: Path, journal: Journal) -> None:
    path = tmp_path / "r.db"
    writer = RecordWriter(journal, lambda: BindingRefusingStore(path), flush_interval=0.01)
    writer.start()
    try:
        journal.append(line("before"))
        journal.append(line("bad", model="unbindable"))
        for n in range(5):
            journal.append(line(f"after-{n}"))
        assert writer.flush(timeout=60), writer.status()  # before: blocked behind the one line, forever
        assert writer.rejected == 1 and "InterfaceError" in str(writer.last_rejected_error)
        assert (journal.directory / REJECTED_NAME).exists()
        stored = {r["id"] for r in SqliteRecordStore(path).iter_records(RecordQuery())}
        assert stored == {"before", *(f"after-{n}" for n in range(5))}
    finally:
        writer.stop()


class UnreachableStore(SqliteRecordStore):
    """A real SQLite store whose database is locked by another process until ``unlock``."""

    locked = True

    def write_lines(self, lines: list[bytes]) -> int:
        if UnreachableStore.locked:
            raise sqlite3.OperationalError("database is locked")
        return super().write_lines(lines)


def test_a_declared_transient_error_keeps_records_in_the_journal_until_the_store_is_back(
    tmp_path: Path, journal: Journal
) -> None:
    path = tmp_path / "r.db"
    UnreachableStore.locked = True
    writer = RecordWriter(journal, lambda: UnreachableStore(path), flush_interval=0.01)
    writer.start()
    try:
        for n in range(3):
            journal.append(line(f"r{n}"))
        assert wait_until(lambda: writer.last_error is not None, timeout=60), writer.status()
        assert not writer.healthy and writer.rejected == 0 and journal.pending_bytes() > 0
        UnreachableStore.locked = False
        assert writer.flush(timeout=60), writer.status()
        assert writer.rejected == 0
        assert {r["id"] for r in SqliteRecordStore(path).iter_records(RecordQuery())} == {"r0", "r1", "r2"}
    finally:
        UnreachableStore.locked = False
        writer.stop()


def test_postgres_going_away_is_transient(pg_url: str, tmp_path: Path, journal: Journal) -> None:
    store = PostgresRecordStore(pg_url)
    try:
        store.pool.close()  # every later call fails the way a vanished server does
        with pytest.raises(Exception) as raised:
            store.write_lines([line("x").rstrip()])
        assert store_down(store, raised.value), repr(raised.value)
    finally:
        store.close()


def test_a_value_past_postgres_index_limits_is_set_aside_not_an_outage(
    pg_url: str, tmp_path: Path, journal: Journal
) -> None:
    # PostgreSQL refuses an index entry past ~2.7 KB (btree) or 8 KB with "program limit exceeded",
    # which the DB-API files under OperationalError. Read as an outage, one line whose indexed column
    # held a long incompressible string kept every later record in the journal, forever.
    store = PostgresRecordStore(pg_url)
    try:
        assert not store_down(store, psycopg.errors.ProgramLimitExceeded("index row requires 9024 bytes"))
        assert refused_data(store, psycopg.errors.ProgramLimitExceeded("index row size 3016 exceeds"))
        assert store_down(store, psycopg.OperationalError("server closed the connection unexpectedly"))
    finally:
        store.close()
    junk = base64.b64encode(os.urandom(9000)).decode()[:9000]
    writer = RecordWriter(journal, lambda: PostgresRecordStore(pg_url), flush_interval=0.01)
    writer.start()
    try:
        journal.append(line("before"))
        journal.append(line("long-model", model=junk))
        journal.append(line("long-user-btree", model=junk[:3000]))
        for n in range(5):
            journal.append(line(f"after-{n}"))
        assert writer.flush(timeout=60), writer.status()
        assert writer.rejected == 2 and "ProgramLimitExceeded" in str(writer.last_rejected_error), writer.status()
        assert writer.healthy, writer.status()
        store = PostgresRecordStore(pg_url)
        try:
            stored = {r["id"] for r in store.iter_records(RecordQuery())}
        finally:
            store.close()
        assert stored == {"before", *(f"after-{n}" for n in range(5))}
    finally:
        writer.stop()


def test_the_replay_of_set_aside_lines_asks_the_store_too(tmp_path: Path) -> None:
    # The replay had its own class-name check: an unbindable line counted as the store being down,
    # so it stopped there and kept every line behind it unreplayed.
    directory = tmp_path / "journal"
    directory.mkdir()
    lines = [line("bad", model="unbindable"), line("good")]
    append_rejected(directory, [{"error": "x", "at": 0.0, "line": one.decode().strip()} for one in lines])
    store = BindingRefusingStore(tmp_path / "r.db")
    try:
        counts = replay_rejected(directory, store)
        assert counts == {"stored": 1, "duplicates": 0, "still_rejected": 1, "unreadable": 0}
        assert [r["id"] for r in store.iter_records(RecordQuery())] == ["good"]
        [kept] = (directory / REJECTED_NAME).read_bytes().splitlines()
        assert b"InterfaceError" in kept and b"unbindable" in kept
        UnreachableStore.locked = True  # a declared outage still stops the replay and keeps the rest
        append_rejected(directory, [{"error": "x", "at": 0.0, "line": line("later").decode().strip()}])
        down = UnreachableStore(tmp_path / "r.db")
        try:
            assert replay_rejected(directory, down)["still_rejected"] == 2
        finally:
            down.close()
        assert len((directory / REJECTED_NAME).read_bytes().splitlines()) == 2
    finally:
        store.close()
