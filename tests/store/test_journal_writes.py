"""Journal appends are whole or absent: short writes are finished, a failed one is cut back, giant records shrink."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import orjson
import pytest

from opsgate.store import journal as journal_module
from opsgate.store import record_log as record_log_module
from opsgate.store.journal import Journal
from opsgate.store.query import RecordQuery
from tests.store.test_record_log import log_for, sample

real_write = os.write


def lines_of(directory: Path) -> list[bytes]:
    [segment] = sorted(directory.glob("*.jsonl"))
    data = segment.read_bytes()
    assert data.endswith(b"\n"), "a torn line is left at the end of the segment"
    return data.splitlines()


def test_short_writes_are_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Linux writes at most 2 GiB per call, and a signal or a nearly full disk can stop a write early:
    # an unchecked short write lost the record's tail.
    monkeypatch.setattr(journal_module.os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    journal = Journal(tmp_path)
    journal.open()
    records = [orjson.dumps({"id": f"r{n}", "text": "x" * (50 * n)}) + b"\n" for n in range(4)]
    for line in records:
        journal.append(line)
    monkeypatch.undo()
    assert [orjson.loads(line)["id"] for line in lines_of(tmp_path)] == ["r0", "r1", "r2", "r3"]
    journal.close()


def test_a_write_that_fails_part_way_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A full disk part-way through a record: the torn part must not glue itself to the next record
    # (one damaged line set aside for two lost records).
    calls = {"n": 0}

    def fill_up(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    journal = Journal(tmp_path)
    journal.open()
    journal.append(b'{"id": "before"}\n')
    size = sum(p.stat().st_size for p in tmp_path.glob("*.jsonl"))
    monkeypatch.setattr(journal_module.os, "write", fill_up)
    with pytest.raises(OSError):
        journal.append(b'{"id": "lost", "text": "' + b"y" * 100 + b'"}\n')
    monkeypatch.undo()
    assert sum(p.stat().st_size for p in tmp_path.glob("*.jsonl")) == size
    journal.append(b'{"id": "after"}\n')
    assert [orjson.loads(line)["id"] for line in lines_of(tmp_path)] == ["before", "after"]
    journal.close()


def test_a_record_past_the_line_limit_keeps_its_essentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A misbehaving upstream's gigabyte answer made a record line past 2 GiB: cut short by the kernel,
    # silently lost. Past the limit the record keeps its plain columns and says why.
    monkeypatch.setattr(record_log_module, "MAX_LINE_BYTES", 4096)
    log = log_for(tmp_path)
    try:
        big = sample("big", "x")
        big["output_text"] = "z" * 10_000
        log.write(big)
        log.write(sample("small", "x"))
        assert log.writer is not None and log.writer.flush(timeout=60)
        rows = {r["id"]: r for r in log.search(RecordQuery(limit=10))[0]}
        assert set(rows) == {"big", "small"}
        assert "over the 4096-byte journal limit" in rows["big"]["tags"]["record_error"]
        assert rows["big"]["status"] == 200 and rows["big"]["output_text"] is None
        assert rows["small"]["output_text"] == "noted" and "record_error" not in (rows["small"]["tags"] or {})
    finally:
        log.stop()
