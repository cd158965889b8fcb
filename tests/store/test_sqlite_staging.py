"""The SQLite writer stages a batch from rows parsed in Python (store/sqlite.py ``_stage``): it must
stage exactly what the JSON-side staging (json_each + json_extract per column) staged before."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from opsgate.store.encoding import record_json, storable_json_text
from opsgate.store.sql import COLUMNS
from opsgate.store.sqlite import _CHUNK_ROWS, SqliteRecordStore, _stage

_COLUMN_LIST = ", ".join(COLUMNS)


def _extract(column: str) -> str:
    value = f"json_extract(value, '$.{column}')"
    return f"coalesce({value}, 0)" if column in ("stream", "cached") else value


# The staging the writer used before (kept here as the reference).
_JSON_STAGE = f"INSERT INTO temp.batch ({_COLUMN_LIST}) SELECT {', '.join(map(_extract, COLUMNS))} FROM json_each(?)"
_JSON_COLUMNS = {"tags", "metadata", "request", "response"}


def _lines() -> list[bytes]:
    now = time.time()
    base: dict[str, Any] = {
        "id": "r0",
        "ts": now,
        "endpoint": "chat",
        "model": "m",
        "status": 200,
        "stream": False,
        "cached": True,
        "latency_ms": 1.5,
        "cost": None,
        "input_text": "héllo 東京",
        "request": '{"model":"m"}',
        "response": {"content": "ok", "n": [1, 2.5, True, None]},
        "tags": {"guard": {"verdict": "allow"}, "attempts": 2, "big": 2**63 + 5},
        "metadata": {"a": "b\x00c", "quote": 'say "hi"\n', "e": "\ud800x"},
        "prompt_version": 3,
        "quality_flags": 2,
    }
    variants: list[dict[str, Any]] = [
        base,
        {"id": "r1", "ts": now, "status": 404},  # most columns missing
        {**base, "id": "r2", "user_id": "u\x00x", "output_text": "lone \udc00 surrogate"},
        {**base, "id": "r3", "prompt_tokens": 2**63 + 1, "completion_tokens": -(2**63)},  # beyond int64
        {**base, "id": "r4", "status": {"nested": [1]}, "model": ["a", "b"]},  # objects in plain columns
        {**base, "id": "r5", "stream": None, "cached": None, "tags": None, "metadata": []},
        {**base, "id": "r6", "ts": 1.0e2, "latency_ms": 0, "cost": 1e-9},
    ]
    return [record_json(v) for v in variants]


def _staged(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    rows = conn.execute(f"SELECT {_COLUMN_LIST} FROM temp.batch ORDER BY rowid").fetchall()
    conn.execute("DELETE FROM temp.batch")
    return [
        tuple(
            orjson.loads(v) if c in _JSON_COLUMNS and isinstance(v, str) and v[:1] in "{[" else v
            for c, v in zip(COLUMNS, row, strict=True)
        )
        for row in rows
    ]


@pytest.mark.parametrize("copies", [1, _CHUNK_ROWS, _CHUNK_ROWS + 3])
def test_python_staging_matches_the_json_staging(tmp_path: Path, copies: int) -> None:
    store = SqliteRecordStore(tmp_path / "r.db")
    lines = [line for _ in range(copies) for line in _lines()]
    with store.connection() as conn:
        conn.execute("DELETE FROM temp.batch")
        conn.execute(_JSON_STAGE, [storable_json_text((b"[" + b",".join(lines) + b"]").decode())])
        expected = _staged(conn)
        _stage(conn, lines)
        got = _staged(conn)
    assert len(got) == len(expected) == len(lines)
    for want, have in zip(expected, got, strict=True):
        for column, a, b in zip(COLUMNS, want, have, strict=True):
            assert (column, a, type(a)) == (column, b, type(b))
    store.close()


def test_a_line_that_is_not_json_is_the_lines_fault_and_a_blank_line_is_nothing(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "r.db")
    with store.connection() as conn:
        with pytest.raises(ValueError, match="not valid JSON"):
            _stage(conn, [_lines()[1], b'{"id": "x", "ts": '])
        with pytest.raises(ValueError, match="not valid JSON"):
            _stage(conn, [b"\xff\xfe"])
        conn.execute("DELETE FROM temp.batch")
        _stage(conn, [b"", b"  ", _lines()[1]])
        assert conn.execute("SELECT count(*) FROM temp.batch").fetchone()[0] == 1
        _stage(conn, [b"[1, 2]"])  # valid JSON, not a record: a row of NULLs the insert refuses
        assert conn.execute("SELECT count(*) FROM temp.batch WHERE id IS NULL AND stream = 0").fetchone()[0] == 1
    store.close()
    assert store.write_lines([_lines()[0]]) == 1


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    "line",
    [
        # JSON orjson reads (1,024 levels) but cannot write back (254): the line's fault, not an outage.
        b'{"id": "deep", "ts": 1, "metadata": ' + orjson.dumps(_nested(200)) + b"}",
        b'{"id": "deep", "ts": 1, "metadata": ' + b'{"k": ' * 300 + b"1" + b"}" * 300 + b"}",
        b'{"id": "huge", "ts": 1, "status": {"n": 1}, "latency_ms": ' + b"9" * 400 + b"}",
    ],
)
def test_a_value_the_store_cannot_keep_is_refused_data(tmp_path: Path, line: bytes) -> None:
    """Staged, such a line either stores or raises one of the store's refused-data errors (the writer then
    stores the batch line by line and sets it aside); any other error would read as a store outage."""
    store = SqliteRecordStore(tmp_path / "r.db")
    good = _lines()[0]
    with store.connection() as conn, contextlib.suppress(*store.refused_data_errors):
        _stage(conn, [line, good])
    store.close()
    with contextlib.suppress(*store.refused_data_errors):
        store.write_lines([line, line, good])
    assert store.write_lines([good]) == 1
