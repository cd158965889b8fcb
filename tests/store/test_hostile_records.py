"""Records built from hostile input still store: huge lines, NUL and lone surrogates, >64-bit integers,
lines a store refuses (counted, shown, replayable), on both stores and both writer modes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.datastructures import QueryParams

from opsgate.domain.config import GatewayConfig, RecordConfig
from opsgate.domain.context import JsonResult, RequestContext
from opsgate.domain.errors import InvalidRequestError
from opsgate.pipeline.record import MemorySink, RecordStage
from opsgate.store.encoding import record_json, storable_json_text
from opsgate.store.journal import Journal
from opsgate.store.query import RecordQuery, check_params, query_from_params
from opsgate.store.record_log import RecordLog, open_store
from opsgate.store.rejected import REJECTED_NAME, RejectedLines, append_rejected
from tests.support import wait_until


def record(rid: str, text: str = "hello", **fields: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "ts": time.time(),
        "endpoint": "chat",
        "model": "m",
        "status": 200,
        "user_id": "u",
        "input_text": text,
        "request": {"messages": [{"role": "user", "content": text}]},
        "response": {"content": "ok"},
        **fields,
    }


def started(store_url: str, tmp_path: Path, writer: str = "thread") -> RecordLog:
    log = RecordLog(RecordConfig(store=store_url, journal_dir=str(tmp_path / "journal"), writer=writer))
    log.start()
    return log


def all_ids(log: RecordLog) -> set[str]:
    return {r["id"] for r in log.store.iter_records(RecordQuery())}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_records_larger_than_a_journal_read_do_not_stop_the_log(store_url: str, tmp_path: Path, writer: str) -> None:
    # A record holds the prompt twice (input_text and the request payload): 1.1 MB and 4 MB prompts
    # make 2.2 and 8 MB lines, beyond the reader's 2 MB read. Everything after them must store too.
    log = started(store_url, tmp_path, writer)
    try:
        log.write(record("big-1", "a" * 1_100_000))
        log.write(record("big-4", "b" * 4_000_000))
        small = {f"small-{n}" for n in range(50)}
        for rid in sorted(small):
            log.write(record(rid))
        assert log.writer is not None and log.writer.flush(timeout=120), log.status()
        assert wait_until(lambda: {"big-1", "big-4"} | small <= all_ids(log), timeout=60), log.status()
        big = log.get("big-4")
        assert big is not None and big["input_text"] == "b" * 4_000_000
        assert big["request"]["messages"][0]["content"] == "b" * 4_000_000
        assert log.status()["healthy"] is True and log.status()["rejected"]["pending"] == 0
    finally:
        log.stop()


def test_a_line_longer_than_the_read_is_read_whole(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    lines = [b"x" * 3_000_001, b"short", b"y" * 5_000_000]
    for line in lines:
        journal.append(line + b"\n")
    seen: list[bytes] = []
    for _ in range(10):
        batch = journal.read_batch(1000)
        for segment, offset, data in batch:
            journal.mark_stored(segment, offset)
            seen.append(data)
    assert seen == lines and journal.pending_bytes() == 0
    journal.close()


def test_nul_and_lone_surrogates_store_on_both_stores(store_url: str, tmp_path: Path) -> None:
    # PostgreSQL's text and jsonb refuse NUL; such a record was answered 200, then set aside, and a
    # batch of nothing else was taken for a store outage; SQLite cut the text at NUL. Now NUL -> U+FFFD.
    log = started(store_url, tmp_path)
    try:
        for n in range(4):  # one batch made only of such records
            log.write(
                record(
                    f"nul-{n}",
                    "abc\u0000def",
                    user_id="user\u0000x",
                    metadata={"k\u0000": "v\u0000"},
                    tags={"lone": "\ud800 surrogate"},
                    error_message="bad\udfff",
                )
            )
        assert log.writer is not None and log.writer.flush(timeout=30) and log.status()["healthy"]
        assert all_ids(log) == {f"nul-{n}" for n in range(4)}
        got = log.get("nul-0")
        assert got is not None
        nul = "\ufffd"  # PostgreSQL refuses NUL, SQLite's json_extract cuts a string at it
        assert got["input_text"] == f"abc{nul}def" and got["user_id"] == f"user{nul}x"
        assert got["request"]["messages"][0]["content"] == "abc\u0000def"  # a JSON string inside: kept as is
        assert got["tags"] == {"lone": "\ufffd surrogate"} and got["error_message"] == "bad\ufffd"
        assert got["metadata"] == {f"k{nul}": f"v{nul}"}
        assert log.status()["rejected"]["pending"] == 0
        assert not (tmp_path / "journal" / REJECTED_NAME).exists()
    finally:
        log.stop()


def test_escapes_postgres_refuses_are_replaced_and_the_rest_kept() -> None:
    text = r'["\u0000", "\\u0000", "\\\u0000", "\ud83d\ude00", "\ud800", "\udc00x", "plain \u0001"]'
    cleaned = storable_json_text(text)
    assert orjson.loads(cleaned) == ["\ufffd", "\\u0000", "\\\ufffd", "\U0001f600", "\ufffd", "\ufffdx", "plain \u0001"]
    assert storable_json_text('{"a": "b"}') == '{"a": "b"}'


def test_any_value_serialises() -> None:
    value = {"seed": 2**70, "neg": -(2**80), 3: "int key", "s": "\ud800", "nested": [{"x": 10**30}], "set": {1}}
    parsed = orjson.loads(record_json(value))
    assert parsed["seed"] == str(2**70) and parsed["neg"] == str(-(2**80)) and parsed["3"] == "int key"
    assert parsed["s"] == "\ufffd" and parsed["nested"] == [{"x": str(10**30)}] and parsed["set"] == [1]
    assert record_json({"ok": 1}) == b'{"ok":1}'


def test_a_record_with_huge_integers_stores(store_url: str, tmp_path: Path) -> None:
    log = started(store_url, tmp_path)
    try:
        log.write(record("huge", request={"seed": 2**70, "extra": {"n": -(10**40)}}, metadata={"n": 2**64}))
        assert log.writer is not None and log.writer.flush(timeout=30) and log.status()["healthy"]
        got = log.get("huge")
        assert got is not None and got["request"]["seed"] == str(2**70) and got["metadata"] == {"n": str(2**64)}
    finally:
        log.stop()


def _refuse_model(store_url: str, tmp_path: Path, model: str, on: bool) -> None:
    """Make the store refuse rows of ``model`` (a constraint an operator later lifts)."""
    store = open_store(store_url)
    try:
        with store.connection() as conn:
            if store_url.startswith("postgres"):
                if on:
                    conn.execute(f"ALTER TABLE requests ADD CONSTRAINT refuse_model CHECK (model <> '{model}')")
                else:
                    conn.execute("ALTER TABLE requests DROP CONSTRAINT refuse_model")
            elif on:
                conn.execute(
                    f"CREATE TRIGGER refuse_model BEFORE INSERT ON requests WHEN new.model = '{model}' "
                    "BEGIN SELECT RAISE(ABORT, 'model refused'); END"
                )
            else:
                conn.execute("DROP TRIGGER refuse_model")
    finally:
        store.close()


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_refused_lines_are_counted_shown_and_replayable(store_url: str, tmp_path: Path, writer: str) -> None:
    log = started(store_url, tmp_path, writer)
    try:
        assert log.writer is not None and log.writer.flush(timeout=30)  # migrated
        _refuse_model(store_url, tmp_path, "blocked", on=True)
        # A batch made only of refused lines: the data's fault, so set aside, not a store outage.
        for n in range(3):
            log.write(record(f"refused-{n}", model="blocked"))
        log.write(record("fine-1"))
        assert log.writer.flush(timeout=30) and log.status()["healthy"]
        for n in range(2):
            log.write(record(f"refused-more-{n}", model="blocked"))
        assert log.writer.flush(timeout=30) and log.status()["healthy"]
        status = log.status()
        assert status["state"] == "degraded" and status["rejected"]["pending"] == 5
        assert status["rejected"]["set_aside"] == 5 and status["rejected"]["last_error"]
        assert all_ids(log) == {"fine-1"}
        # Replaying before the cause is fixed keeps every line, with its error.
        assert log.replay_rejected() == {"stored": 0, "duplicates": 0, "still_rejected": 5, "unreadable": 0}
        assert log.status()["rejected"]["pending"] == 5
        _refuse_model(store_url, tmp_path, "blocked", on=False)
        assert log.replay_rejected() == {"stored": 5, "duplicates": 0, "still_rejected": 0, "unreadable": 0}
        assert all_ids(log) == {"fine-1", *(f"refused-{n}" for n in range(3)), "refused-more-0", "refused-more-1"}
        status = log.status()
        assert status["state"] == "ok" and status["rejected"]["pending"] == 0
        # Replaying again stores nothing twice.
        assert log.replay_rejected()["stored"] == 0
    finally:
        log.stop()


def test_a_user_whose_id_holds_nul_can_be_erased(store_url: str, tmp_path: Path) -> None:
    log = started(store_url, tmp_path)
    try:
        log.write(record("eve-1", user_id="eve\u0000x"))
        log.write(record("other-1", user_id="eve"))
        assert log.writer is not None and log.writer.flush(timeout=30) and log.status()["healthy"]
        result = log.erase_user("eve\u0000x", "test")
        assert result["requests_deleted"] == 1 and result["after"]["requests"] == 0
        assert all_ids(log) == {"other-1"}
        # A record journaled before the erasure and stored after it is dropped too.
        log.write(record("eve-late", user_id="eve\u0000x", ts=time.time() - 60))
        assert log.writer.flush(timeout=30)
        assert all_ids(log) == {"other-1"}
    finally:
        log.stop()


@pytest.mark.parametrize(
    ("params", "tags", "param"),
    [
        ({"q": "\u0000"}, None, "q"),
        ({"client_request_id": "a\u0000"}, None, "client_request_id"),
        ({}, ["ok=1", "k=\u0000"], "tag"),
        ({"since": "nan"}, None, "since"),
        ({"until": "1e400"}, None, "until"),
        ({"limit": "inf"}, None, "limit"),
        ({"min_cost": "nan"}, None, "min_cost"),
        ({"cursor": "bmFufHg="}, None, "cursor"),  # "nan|x"
    ],
)
def test_query_parameters_a_store_cannot_compare_are_refused(
    params: dict[str, str], tags: list[str] | None, param: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        query_from_params(params, tags)
    assert refused.value.param == param


def test_every_value_of_a_repeated_parameter_is_checked() -> None:
    with pytest.raises(InvalidRequestError) as refused:
        check_params(QueryParams([("tag", "a\u0000=b"), ("tag", "c=d")]), {"id": "x"})
    assert refused.value.param == "tag"
    with pytest.raises(InvalidRequestError):
        check_params({}, {"id": "x\u0000"})
    check_params(QueryParams([("tag", "a=b")]), {"id": "x"})


def test_a_record_that_fails_to_build_is_still_written(tmp_path: Path) -> None:
    # An odd upstream answer (an embedding entry that is not an object) broke building the record:
    # "internal error in record", a 500 and no record. Now the essentials are recorded.
    sink = MemorySink()
    stage = RecordStage(GatewayConfig(), sink)
    ctx = RequestContext(endpoint="embedding", raw_body=b"", headers={"x-request-id": "mine-1"}, request_id="gw-1")
    response = asyncio.run(stage.after(ctx, JsonResult({"data": ["not an object"], "usage": {"prompt_tokens": 1}})))
    assert response.status == 200
    [written] = sink.records
    assert written["id"] == "gw-1" and written["client_request_id"] == "mine-1" and written["status"] == 200
    assert "AttributeError" in written["tags"]["record_error"]
    assert orjson.loads(record_json(written))["endpoint"] == "embedding"


def test_the_rejected_summary_reads_big_lines_in_pieces(tmp_path: Path) -> None:
    lines = RejectedLines(tmp_path)
    assert lines.summary() == {"pending": 0, "last_error": None, "last_at": None}
    append_rejected(tmp_path, [{"error": "first", "at": 1.0, "line": "a" * 2_500_000}])
    append_rejected(tmp_path, [{"error": "second", "at": 2.0, "line": "{}"}])
    assert lines.summary() == {"pending": 2, "last_error": "second", "last_at": 2.0}
    append_rejected(tmp_path, [{"error": "x" * 5000 + '"\u00e9', "at": 3.5, "line": "b" * 1_500_000}])
    summary = lines.summary()
    assert summary["pending"] == 3 and summary["last_error"] == "x" * 1000 and summary["last_at"] == 3.5
    for size in (1 << 20, (1 << 20) - 1, (1 << 20) + 1):  # a newline at, before and after a read boundary
        other = tmp_path / f"s{size}"
        other.mkdir()
        head = len(orjson.dumps({"error": "e", "at": 1.0, "line": ""})) + 1
        append_rejected(other, [{"error": "e", "at": 1.0, "line": "c" * (size - head)}])
        append_rejected(other, [{"error": "last", "at": 9.0, "line": "d"}])
        assert RejectedLines(other).summary() == {"pending": 2, "last_error": "last", "last_at": 9.0}
