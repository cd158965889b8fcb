"""The writer process's handover: reading live segments, taking released ones, resuming, one writer per directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from opsgate.domain.config import RecordConfig
from opsgate.store.journal import Journal, JournalReader
from opsgate.store.query import RecordQuery
from opsgate.store.record_log import RecordLog
from opsgate.store.writer_process import LOCK_NAME, WriterProcess, read_status


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
def test_writer_reports_a_store_it_cannot_open(tmp_path: Path) -> None:
    from tests.support import free_port

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
    started = time.monotonic()
    log.stop()  # does not wait for a writer that cannot store
    assert time.monotonic() - started < 5
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
