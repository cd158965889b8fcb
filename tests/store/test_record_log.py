"""The request log end to end in-process: encryption and key rotation, metadata-only mode, torn journals."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from opsgate.domain.config import RecordConfig
from opsgate.store.crypto import KeyError_, PayloadCipher, new_key_line, parse_keys
from opsgate.store.journal import Journal
from opsgate.store.query import RecordQuery
from opsgate.store.record_log import RecordLog
from opsgate.store.writer import RecordWriter


def key(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def sample(rid: str, secret: str) -> dict[str, Any]:
    return {
        "id": rid,
        "ts": 1_800_000_000.0,
        "endpoint": "chat",
        "model": "m",
        "status": 200,
        "user_id": "u",
        "input_text": f"my card is {secret}",
        "output_text": "noted",
        "request": {"messages": [{"role": "user", "content": f"my card is {secret}"}]},
        "response": {"content": "noted"},
    }


def log_for(tmp_path: Path, **record: Any) -> RecordLog:
    config = RecordConfig(store=f"sqlite:///{tmp_path}/r.db", journal_dir=str(tmp_path / "journal"), **record)
    log = RecordLog(config)
    log.start()
    return log


def raw_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "r.db") as db:
        return db.execute("SELECT request, response, input_text, output_text, payload_key_id FROM requests").fetchall()


def test_encrypted_rows_are_unreadable_without_the_key_and_rotation_keeps_them(tmp_path: Path) -> None:
    old, new = key("k1"), key("k2")
    log = log_for(tmp_path, encryption={"enabled": True, "keys": old, "index_in_clear": ["output"]})
    log.write(sample("r1", "4111-1111-1111-1111"))
    assert log.writer is not None and log.writer.flush()
    [row] = raw_rows(tmp_path)
    assert "4111" not in repr(row)  # neither payloads nor the input text are in clear
    assert row[0].startswith("enc:v1:k1:") and row[2] is None and row[3] == "noted" and row[4] == "k1"
    assert log.get("r1")["request"]["messages"][0]["content"] == "my card is 4111-1111-1111-1111"  # type: ignore[index]
    assert [r["id"] for r in log.search(RecordQuery(text="noted"))[0]] == ["r1"]  # indexed in clear by choice
    assert log.search(RecordQuery(text="4111"))[0] == []
    log.stop()

    # Rotate: k2 encrypts from now on, k1 still opens old rows.
    log = log_for(tmp_path, encryption={"enabled": True, "keys": f"{new},{old}"})
    log.write(sample("r2", "5500-0000-0000-0004"))
    assert log.writer is not None and log.writer.flush()
    assert log.get("r1")["request"]["messages"][0]["content"].endswith("4111-1111-1111-1111")  # type: ignore[index]
    assert log.get("r2")["request"]["messages"][0]["content"].endswith("5500-0000-0000-0004")  # type: ignore[index]
    assert {r[4] for r in raw_rows(tmp_path)} == {"k1", "k2"}
    log.stop()

    # Without the old key, its rows do not open, and say why.
    log = log_for(tmp_path, encryption={"enabled": True, "keys": new})
    with pytest.raises(KeyError_, match="k1"):
        log.get("r1")
    log.stop()


def test_tampered_ciphertext_is_detected() -> None:
    cipher = PayloadCipher(parse_keys(new_key_line("k")))
    sealed = cipher.encrypt("secret", "row-1")
    with pytest.raises(KeyError_):
        cipher.decrypt(sealed, "row-2")  # moved to another row
    assert cipher.decrypt(sealed, "row-1") == "secret"


def test_bad_keys_are_refused() -> None:
    with pytest.raises(KeyError_, match="32 bytes"):
        parse_keys("k:" + base64.b64encode(b"short").decode())
    with pytest.raises(KeyError_, match="base64"):
        parse_keys("k:not base64!!")


def test_metadata_only_stores_no_payloads(tmp_path: Path) -> None:
    from opsgate.domain.config import GatewayConfig
    from opsgate.domain.context import JsonResult, RequestContext
    from opsgate.domain.requests import ChatCompletionRequest
    from opsgate.pipeline.record import MemorySink, RecordStage

    config = GatewayConfig(record=RecordConfig(payloads="metadata_only"))
    sink = MemorySink()
    stage = RecordStage(config, sink)
    ctx = RequestContext(endpoint="chat", raw_body=b"", headers={}, request_id="r")
    ctx.body = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "private"}])  # type: ignore[list-item]
    import asyncio

    asyncio.run(
        stage.after(
            ctx,
            JsonResult(
                {
                    "choices": [{"message": {"content": "also private"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                }
            ),
        )
    )
    [record] = sink.records
    assert "private" not in repr(record)
    assert record["prompt_tokens"] == 3 and record["finish_reason"] == "stop"


def test_torn_journal_tail_is_dropped_and_the_rest_replayed(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    import orjson

    lines = [orjson.dumps(sample(f"t{n}", "x")) + b"\n" for n in range(3)]
    (journal_dir / "999999-1-0.jsonl").write_bytes(b"".join(lines) + b'{"id": "t3", "ts": 1')  # killed mid-write
    log = log_for(tmp_path)
    assert log.writer is not None and log.writer.flush()
    assert sorted(r["id"] for r in log.search(RecordQuery())[0]) == ["t0", "t1", "t2"]
    log.stop()
    assert not list(journal_dir.glob("*.jsonl"))


def test_journal_rotates_segments_and_deletes_stored_ones(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=200)
    journal.open()
    for n in range(10):
        journal.append(b'{"n": %d, "pad": "................................................"}\n' % n)
    assert len(journal.segments) > 3
    batch = journal.read_batch(100)
    assert len(batch) == 10
    for segment, offset, _ in batch:
        journal.mark_stored(segment, offset)
    journal.delete_finished()
    assert len(journal.segments) == 1 and journal.pending_bytes() == 0  # only the active one is left
    journal.close()
    assert not list((tmp_path / "j").glob("*.jsonl"))


def test_writer_idles_and_catches_up_past_the_backlog_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The writer thread runs SCHED_IDLE (requests first); past catch_up_bytes of backlog it competes
    # at normal priority until the backlog halves, then goes back to idle.
    config = RecordConfig(store=f"sqlite:///{tmp_path}/r.db", journal_dir=str(tmp_path / "journal"), batch_size=20)
    log = RecordLog(config)
    assert isinstance(log.writer, RecordWriter)
    log.writer.catch_up_bytes = 20_000
    log.journal.open()
    for n in range(400):  # ~150 KB journaled before the writer starts: a backlog
        log.write(sample(f"r{n}", "x"))
    caplog.set_level("INFO", logger="opsgate.store.writer")
    log.writer.start()
    assert log.writer.flush(timeout=5)
    tid = log.writer._thread.native_id
    assert tid is not None
    messages = [r.getMessage() for r in caplog.records]
    assert any("competes for CPU" in m for m in messages), messages
    assert any("back at idle priority" in m for m in messages), messages
    assert not log.writer.catching_up and os.sched_getscheduler(tid) == os.SCHED_IDLE
    assert len(log.search(RecordQuery(limit=1000))[0]) == 400
    log.stop()


def test_a_damaged_journal_line_is_set_aside_not_retried_forever(store_url: str, tmp_path: Path) -> None:
    # A line that is not JSON (disk damage, a hand-edited file) must not read as "store down" and
    # block the journal: the good records are stored, the bad line lands in rejected.jsonl.txt.
    log = RecordLog(RecordConfig(store=store_url, journal_dir=str(tmp_path / "journal")))
    log.journal.open()
    log.write(sample("good-1", "x"))
    log.journal.append(b'{"id": "torn", "ts": \n')
    assert log.writer is not None
    log.writer.start()
    assert log.writer.flush(timeout=30) and log.writer.healthy
    assert {r["id"] for r in log.search(RecordQuery())[0]} == {"good-1"}
    log.journal.append(b"\xff\xfe not even utf-8\n")
    log.write(sample("good-2", "x"))
    assert log.writer.flush(timeout=30) and log.writer.healthy
    assert {r["id"] for r in log.search(RecordQuery())[0]} == {"good-1", "good-2"}
    rejected = (tmp_path / "journal" / "rejected.jsonl.txt").read_text()
    assert rejected.count("\n") == 2 and "torn" in rejected
    log.stop()
