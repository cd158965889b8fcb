"""The writer's batch is bounded in bytes, not only in lines: a backlog of multi-MB records in many
segments made one batch of a line from every segment (hundreds of MB held by the writer and again by
SQLite; the gateway's RSS grew by GBs under a flood of 2 MB prompts). Every record is still stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from opsgate.domain.config import RecordConfig
from opsgate.store.journal import Journal
from opsgate.store.record_log import RecordLog, open_store
from opsgate.store.sql import SqlRecordStore
from opsgate.store.writer import RecordWriter
from opsgate.store.writer_process import WriterProcess

MB = 1024 * 1024


def big_line(n: int, size: int) -> bytes:
    record = {"id": f"{n:024x}", "ts": 1_800_000_000.0, "endpoint": "chat", "model": "m", "status": 200}
    record["input_text"] = "x" * size
    return orjson.dumps(record) + b"\n"


def backlog(directory: Path, segments: int, per_segment: int, size: int) -> Journal:
    """A journal whose every ``per_segment`` appends fill a segment: ``segments`` of them wait."""
    journal = Journal(directory, segment_bytes=per_segment * size)
    journal.open()
    for n in range(segments * per_segment):
        journal.append(big_line(n, size))
    return journal


def test_a_batch_takes_lines_up_to_the_byte_bound_across_many_segments(tmp_path: Path) -> None:
    journal = backlog(tmp_path / "j", segments=20, per_segment=2, size=MB)
    # Counted in lines alone it took a line or more from every segment: 20 MB or more.
    assert len(journal.read_batch(1000)) >= 20
    batch, full = journal.read_bounded(1000, 3 * MB)
    assert full
    assert 1 <= len(batch) <= 3
    assert sum(len(line) for _, _, line in batch) <= 3 * MB
    journal.close()


def test_a_line_larger_than_the_bound_goes_alone(tmp_path: Path) -> None:
    journal = backlog(tmp_path / "j", segments=3, per_segment=1, size=2 * MB)
    batch, full = journal.read_bounded(1000, MB)
    assert full
    assert len(batch) == 1 and len(batch[0][2]) > 2 * MB
    journal.close()


def test_the_journals_end_is_not_a_full_batch(tmp_path: Path) -> None:
    journal = backlog(tmp_path / "j", segments=1, per_segment=3, size=1000)
    batch, full = journal.read_bounded(1000, MB)
    assert len(batch) == 3 and not full
    journal.close()


class Recording:
    """Wraps a store: the size of every batch it was given."""

    def __init__(self, store: SqlRecordStore) -> None:
        self.store = store
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def write_lines(self, lines: list[bytes]) -> int:
        self.batches.append(sum(len(line) for line in lines))
        return self.store.write_lines(lines)


def test_the_writer_stores_every_record_in_batches_under_its_byte_bound(tmp_path: Path) -> None:
    journal = backlog(tmp_path / "j", segments=12, per_segment=2, size=MB)
    journal.close()  # as after a crash: a fresh journal claims the backlog
    journal = Journal(tmp_path / "j")
    journal.open()
    opened: list[Recording] = []

    def opener() -> Any:
        opened.append(Recording(open_store(f"sqlite:///{tmp_path}/r.db")))
        return opened[-1]

    open_it: Callable[[], SqlRecordStore] = opener
    writer = RecordWriter(journal, open_it, batch_bytes=2 * MB + 4096, flush_interval=0.01)
    writer.start()
    try:
        assert writer.flush(timeout=300), writer.status()
    finally:
        writer.stop()
        journal.close()
    assert writer.written == 24  # nothing lost to the bound
    assert max(opened[0].batches) <= 2 * MB + 4096
    assert len(opened[0].batches) >= 12


def test_record_config_bounds_batch_max_mb_and_the_writers_get_it(tmp_path: Path) -> None:
    for bad in (0, 1025):
        with pytest.raises(ValidationError):
            RecordConfig(batch_max_mb=bad)
    config = RecordConfig(store=f"sqlite:///{tmp_path}/r.db", journal_dir=str(tmp_path / "j"), batch_max_mb=3)
    log = RecordLog(config)
    assert isinstance(log.writer, RecordWriter) and log.writer.batch_bytes == 3 * MB
    process = RecordConfig(**{**config.model_dump(), "writer": "process"})
    handle = WriterProcess(Journal(tmp_path / "j2", hand_over=True), process)
    assert handle.settings["batch_bytes"] == 3 * MB
    assert RecordConfig().batch_max_mb == 16


def test_the_default_bound_keeps_small_records_in_one_batch(tmp_path: Path) -> None:
    """Small records still batch by count: the byte bound costs no transactions at normal sizes."""
    journal = backlog(tmp_path / "j", segments=1, per_segment=500, size=2000)
    batch, full = journal.read_bounded(1000, 16 * MB)
    assert len(batch) == 500 and not full
    journal.close()
