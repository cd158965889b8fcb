"""The writer process's handover: reading live segments, taking released ones, resuming, one writer per directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from opsgate.domain.config import RecordConfig
from opsgate.store import writer_process
from opsgate.store.journal import Journal, JournalReader
from opsgate.store.query import RecordQuery
from opsgate.store.record_log import RecordLog
from opsgate.store.writer_process import IDLE_EXIT, LOCK_NAME, WriterLifetime, WriterProcess, read_status
from tests.store.writers import gone, stop_writers


@pytest.fixture(autouse=True)
def no_writer_left_behind(tmp_path: Path) -> Iterator[None]:
    """Stop the writers a test started: one left running logs into the next tests' output."""
    yield
    assert not stop_writers(tmp_path), "a writer process ignored SIGTERM and was killed"


def line(n: int) -> bytes:
    return b'{"n": %d, "pad": "................................"}\n' % n


def record(rid: str) -> dict[str, Any]:
    return {"id": rid, "ts": time.time(), "endpoint": "chat", "model": "m", "status": 200, "input_text": rid}


def store_all(reader: JournalReader) -> list[bytes]:
    batch = reader.read_batch(1000)
    for segment, offset, _ in batch:
        reader.mark_stored(segment, offset)
    return [data for _, _, data in batch]


def test_reader_reads_a_live_segment_to_its_last_complete_line_and_takes_it_once_released(tmp_path: Path) -> None:
    journal = Journal(tmp_path, hand_over=True)
    journal.open()
    journal.append(line(0))
    assert journal._fd is not None
    os.write(journal._fd, b'{"n": 1, "pa')  # an append in progress
    reader = JournalReader(tmp_path)
    assert reader.claim_orphans() == 0 and reader.live_count() == 1  # its owner holds the lock
    assert store_all(reader) == [line(0).rstrip(b"\n")]
    reader.discard_torn_tail(reader.segments[0])
    assert reader.delete_finished() == 0 and reader.pending_bytes() > 0  # live: never cut, never deleted
    os.write(journal._fd, b'd"}\n')
    assert store_all(reader) == [b'{"n": 1, "pad"}']
    journal.close()  # the owner lets go
    assert reader.claim_orphans() == 1 and reader.live_count() == 0
    assert reader.delete_finished() == 1 and not list(tmp_path.glob("*.jsonl"))
    reader.close()


def test_rotation_hands_the_old_segment_over_and_a_restarted_reader_resumes(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=150, hand_over=True)
    journal.open()
    for n in range(6):
        journal.append(line(n))
    assert len(list(tmp_path.glob("*.jsonl"))) == 3  # three lines a segment
    reader = JournalReader(tmp_path)
    assert reader.claim_orphans() == 2 and reader.live_count() == 1  # rotated ones are released at once
    stored = store_all(reader)
    assert len(stored) == 6
    offsets = reader.offsets()
    reader.close()
    # A new reader with the old offsets (a restarted writer) reads nothing twice.
    journal.append(line(6))
    again = JournalReader(tmp_path, offsets=offsets)
    again.claim_orphans()
    assert store_all(again) == [line(6).rstrip(b"\n")]
    again.delete_finished()
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # only the live one is left
    journal.close()
    again.close()


def test_a_segment_being_created_is_never_taken_for_a_dead_one(tmp_path: Path) -> None:
    (tmp_path / ".123-1-0.jsonl.creating").write_bytes(b"")  # its creator died before the rename
    reader = JournalReader(tmp_path)
    reader.claim_orphans()
    assert not list(tmp_path.iterdir())
    journal = Journal(tmp_path, hand_over=True)
    journal.open()
    [segment] = journal.segments
    assert segment.path.suffix == ".jsonl" and segment.lock_fd is not None  # locked before it had its name
    reader.claim_orphans()
    assert reader.live_count() == 1
    journal.close()
    reader.close()


def log_for(tmp_path: Path, **record_config: Any) -> RecordLog:
    config = RecordConfig(
        store=f"sqlite:///{tmp_path}/r.db", journal_dir=str(tmp_path / "journal"), writer="process", **record_config
    )
    log = RecordLog(config)
    log.start()
    return log


@pytest.mark.timeout(60)
def test_flush_status_and_restart_through_the_gateway_side_handle(tmp_path: Path) -> None:
    log = log_for(tmp_path)
    assert isinstance(log.writer, WriterProcess)
    for n in range(20):
        log.write(record(f"a{n}"))
    assert log.writer.flush()
    assert len(log.search(RecordQuery())[0]) == 20
    status = log.status()
    assert status["healthy"] is True and status["pending_bytes"] == 0 and status["written"] == 20
    first = status["writer_pid"]
    assert first is not None and first != os.getpid()

    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while log.status()["writer_pid"] in (None, first) or not log.status()["healthy"]:
        assert time.monotonic() < deadline, log.status()
        time.sleep(0.05)
    for n in range(20):
        log.write(record(f"b{n}"))
    assert log.writer.flush()
    assert len(log.search(RecordQuery(limit=100))[0]) == 40
    assert log.status()["writer_starts"] == 2
    log.stop()
    assert not list((tmp_path / "journal").glob("*.jsonl"))


@pytest.mark.timeout(60)
def test_a_second_writer_for_the_same_directory_exits_at_once(tmp_path: Path) -> None:
    log = log_for(tmp_path)
    assert isinstance(log.writer, WriterProcess)
    log.write(record("x"))
    assert log.writer.flush()
    holder = int((tmp_path / "journal" / LOCK_NAME).read_text())
    settings = orjson.dumps(log.writer.settings)
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "opsgate.store.writer_process"], input=settings, timeout=30, check=False
    )
    assert second.returncode == 0 and time.monotonic() - started < 10
    assert int((tmp_path / "journal" / LOCK_NAME).read_text()) == holder
    log.stop()


@pytest.mark.timeout(60)
def test_a_gateway_stopping_before_its_writer_took_the_lock_waits_for_it(tmp_path: Path) -> None:
    # A gateway stopped right after its writer was spawned (a quick restart, or the writer replaced a
    # moment before) took "no writer holds the lock" for "none running" and left at once.
    log = log_for(tmp_path)
    log.write(record("early"))
    log.stop()  # microseconds after the spawn: the writer's interpreter is still starting
    assert not list((tmp_path / "journal").glob("*.jsonl")), "stop() should wait for the writer it started"
    check = RecordLog(RecordConfig(store=f"sqlite:///{tmp_path}/r.db", journal_dir=str(tmp_path / "j2")))
    check.start()
    try:
        assert [r["id"] for r in check.iter_records(RecordQuery())] == ["early"]
    finally:
        check.stop()


@pytest.mark.timeout(60)
def test_writer_reports_a_store_it_cannot_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import free_port

    monkeypatch.setattr(writer_process, "GIVE_UP", 1.0)  # passed to the writer in its settings
    config = RecordConfig(
        store=f"postgresql://postgres@127.0.0.1:{free_port()}/test",
        journal_dir=str(tmp_path / "journal"),
        writer="process",
    )
    log = RecordLog(config)
    log.start()
    log.write(record("kept"))
    deadline = time.monotonic() + 15
    while (
        not log.status()["last_error"]
        or "starting" in log.status()["last_error"]
        or "not running" in (log.status()["last_error"] or "")
    ):
        assert time.monotonic() < deadline, log.status()
        time.sleep(0.05)
    status = log.status()
    assert status["healthy"] is False and "cannot open store" in status["last_error"]
    assert status["pending_bytes"] > 0
    assert log.writer is not None and not log.writer.flush(timeout=0.3)
    pid = status["writer_pid"]
    started = time.monotonic()
    log.stop()  # does not wait for a writer that cannot store
    assert time.monotonic() - started < 5
    # Its gateway gone and its store down, the writer exits by itself, without waiting out its store's
    # timeouts (each open waits 10 s for a connection; it used to take three, 20-30 s after the stop).
    assert gone(pid, 15), "an orphaned writer whose store is down should exit"
    assert list((tmp_path / "journal").glob("*.jsonl")), "the record stays in the journal"
    assert (read_status(tmp_path / "journal") or {}).get("healthy") is False


@pytest.mark.timeout(60)
def test_retention_runs_in_the_writer_process(tmp_path: Path) -> None:
    log = log_for(tmp_path, retention={"default_days": 1, "interval_seconds": 0.5})
    assert isinstance(log.writer, WriterProcess)
    old = record("old") | {"ts": time.time() - 3 * 86400}
    log.write(old)
    log.write(record("new"))
    assert log.writer.flush()
    # The first pass runs 5 s after the writer starts (a replayed backlog is checked then too).
    deadline = time.monotonic() + 20
    while [r["id"] for r in log.search(RecordQuery())[0]] != ["new"] or log.status()["expired_deleted"] != 1:
        assert time.monotonic() < deadline, (log.search(RecordQuery())[0], log.status())
        time.sleep(0.2)
    log.stop()


@pytest.mark.timeout(90)
def test_an_orphaned_writer_whose_store_hangs_gives_up_and_a_restarted_gateway_takes_over(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A store that stops answering without refusing (here an INSERT waits on a lock; in production a
    # server or proxy that stopped answering) blocks the writer's loop for good: its gateway gone,
    # it used to hold the directory's lock for as long as that lasted.
    monkeypatch.setattr(writer_process, "GIVE_UP", 2.0)
    config = RecordConfig(store=pg_url, journal_dir=str(tmp_path / "journal"), writer="process")
    log = RecordLog(config)
    log.start()
    blocker = psycopg.connect(pg_url)
    try:
        log.write(record("before"))
        assert log.writer is not None and log.writer.flush(timeout=30)
        pid = log.status()["writer_pid"]
        blocker.execute("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE")  # held until rollback
        for n in range(5):
            log.write(record(f"during-{n}"))
        log.stop()  # the gateway goes: the writer is an orphan stuck inside an INSERT
        assert gone(pid, 30), "an orphaned writer that stores nothing should give up"
        status = read_status(tmp_path / "journal") or {}
        assert status.get("healthy") is False and "gave up" in (status.get("last_error") or "")
        assert list((tmp_path / "journal").glob("*.jsonl")), "the records stay in the journal"
    finally:
        blocker.rollback()
        blocker.close()
    # The next start stores what the one that gave up could not, once each.
    again = RecordLog(config)
    again.start()
    try:
        assert again.writer is not None and again.writer.flush(timeout=30), again.status()
        ids = [r["id"] for r in again.iter_records(RecordQuery())]
        assert sorted(ids) == sorted(["before", *(f"during-{n}" for n in range(5))])
        assert again.status()["healthy"] is True
    finally:
        again.stop()


class FakeWriter:
    """What ``WriterLifetime`` reads of a ``RecordWriter``."""

    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy
        self.last_write_at: float | None = None
        self.stop_requests = 0

    def request_stop(self) -> None:
        self.stop_requests += 1


def lifetime_for(tmp_path: Path, healthy: bool) -> tuple[Journal, JournalReader, FakeWriter, WriterLifetime]:
    journal = Journal(tmp_path, hand_over=True)  # a gateway: holds its segment's lock
    journal.open()
    journal.append(line(0))
    reader = JournalReader(tmp_path)
    reader.claim_orphans()
    writer = FakeWriter(healthy)
    return journal, reader, writer, WriterLifetime(tmp_path, reader, writer, give_up=5.0)  # type: ignore[arg-type]


def test_lifetime_keeps_a_writer_while_a_gateway_appends_and_while_an_orphan_stores(tmp_path: Path) -> None:
    journal, reader, writer, lifetime = lifetime_for(tmp_path, healthy=True)
    t = time.monotonic()
    assert lifetime.check(t) is None and lifetime.check(t + 100) is None  # however long nothing is stored
    assert writer.stop_requests == 0
    journal.close()
    reader.claim_orphans()
    assert lifetime.check(t + 101) is None  # orphaned from here, records still to store
    assert lifetime.check(t + 101 + IDLE_EXIT + 0.1) is None and writer.stop_requests == 0
    writer.last_write_at = time.time()  # a batch stored: the give-up clock restarts
    assert lifetime.check(t + 104) is None
    assert lifetime.check(t + 108.9) is None
    reason = lifetime.check(t + 109.1)
    assert reason is not None and "no gateway" in reason and writer.stop_requests == 0
    reader.close()


def test_lifetime_stops_an_orphan_whose_store_is_down_and_bounds_a_stop(tmp_path: Path) -> None:
    journal, reader, writer, lifetime = lifetime_for(tmp_path, healthy=False)
    t = time.monotonic()
    assert lifetime.check(t) is None and writer.stop_requests == 0  # a gateway appends: it keeps trying
    journal.close()
    reader.claim_orphans()
    assert lifetime.check(t + 1) is None and writer.stop_requests == 0
    assert lifetime.check(t + 1 + IDLE_EXIT) is None and writer.stop_requests == 1  # the files wait
    assert lifetime.check(t + 5.9 + IDLE_EXIT) is None
    assert lifetime.check(t + 6.1 + IDLE_EXIT) is not None  # still inside the store: gives up
    reader.close()


def test_lifetime_bounds_a_stop_asked_for_while_a_gateway_appends(tmp_path: Path) -> None:
    journal, reader, writer, lifetime = lifetime_for(tmp_path, healthy=True)
    t = time.monotonic()
    assert lifetime.check(t) is None
    lifetime.request_stop()  # SIGTERM: a gateway with other settings replaces this writer
    asked = time.monotonic()
    assert writer.stop_requests == 1 and lifetime.check(asked + 4.9) is None
    reason = lifetime.check(asked + 5.1)
    assert reason is not None and "asked to stop" in reason
    journal.close()
    reader.close()
