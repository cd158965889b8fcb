"""The record store on SQLite (WAL): the embedded default, one file, FTS5 trigram search."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from opsgate.store import rollups
from opsgate.store.encoding import storable_json_text
from opsgate.store.migrations import migrate_sqlite
from opsgate.store.sql import COLUMNS, USAGE_COLUMNS, USAGE_UPSERT, SqlRecordStore, user_hash

_COLUMN_LIST = ", ".join(COLUMNS)

# What the record writer retries later (the database locked or unreachable, a disk error), and what
# says a line's own data is refused (set aside, the rest stored). ``sqlite3.InterfaceError`` (a value
# it cannot bind) is neither: the one-by-one pass finds out whether it is the line or the store.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, OSError, TimeoutError)
REFUSED_DATA_ERRORS: tuple[type[BaseException], ...] = (sqlite3.DataError, sqlite3.IntegrityError, ValueError)


# The batch is staged in a temp table from rows parsed in Python (orjson), ``_CHUNK_ROWS`` records
# per multi-row INSERT. SQLite's json_each + one json_extract per column cost ~40 us a record of
# writer CPU (each call walks the record's JSON again), this ~20 us; on a one-core gateway the
# writer's CPU is the log's whole cost to throughput. The GIL is held to parse a chunk (~8 us a
# record, ~0.3 ms a chunk) and released by every sqlite3_step, so the event loop never waits long.
# 999 bound parameters a statement: the limit of SQLite before 3.32, which Python 3.11 may be linked to.
_CHUNK_ROWS = 999 // len(COLUMNS)
_ROW = "(" + ", ".join("?" * len(COLUMNS)) + ")"
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# Columns that may hold an object or array (stored as its JSON text), and those a missing value
# stores as 0 (``coalesce``, as the JSON-side staging did).
_JSON_AT = tuple(i for i, c in enumerate(COLUMNS) if c in ("tags", "metadata", "request", "response"))
_ZERO_AT = tuple(i for i, c in enumerate(COLUMNS) if c in ("stream", "cached"))
_EMPTY_ROW: tuple[Any, ...] = tuple(0 if i in _ZERO_AT else None for i in range(len(COLUMNS)))


def _stage_sql(rows: int) -> str:
    return f"INSERT INTO temp.batch ({_COLUMN_LIST}) VALUES " + ", ".join([_ROW] * rows)


_STAGE_FULL = _stage_sql(_CHUNK_ROWS)


def _parse(line: bytes) -> Any:
    try:
        # PostgreSQL refuses NUL and lone-surrogate escapes; they become U+FFFD on both stores (encoding.py).
        return orjson.loads(storable_json_text(line.decode()) if b"\\u" in line else line)
    except (orjson.JSONDecodeError, UnicodeDecodeError) as error:
        # A damaged line, not a store outage: the writer stores the batch line by line then, and
        # sets aside the one that fails.
        raise ValueError(f"a journal line is not valid JSON: {error}") from None


def _row(record: Any) -> list[Any]:
    """A record's column values; an object or array in one of the JSON columns as its JSON text."""
    if record.__class__ is not dict:
        return list(_EMPTY_ROW)  # not an object: every column NULL, so the insert refuses the line
    get = record.get
    row = [get(column) for column in COLUMNS]
    for i in _JSON_AT:
        value = row[i]
        if value.__class__ is dict or value.__class__ is list:
            row[i] = orjson.dumps(value).decode()
    for i in _ZERO_AT:
        if row[i] is None:
            row[i] = 0
    return row


def _row_exact(record: Any) -> list[Any]:
    """``_row`` for a record that did not bind: any column's object or array as JSON text, and an
    integer beyond 64 bits signed as a REAL (as SQLite's JSON functions return it)."""
    row = _row(record)
    for i, value in enumerate(row):
        if value.__class__ is dict or value.__class__ is list:
            row[i] = orjson.dumps(value).decode()
        elif value.__class__ is int and not _INT64_MIN <= value <= _INT64_MAX:
            row[i] = float(value)
    return row


def _stage(conn: sqlite3.Connection, lines: list[bytes]) -> None:
    """Insert the journal lines' records into ``temp.batch``, ``_CHUNK_ROWS`` rows a statement."""
    for start in range(0, len(lines), _CHUNK_ROWS):
        # A blank line holds no record (the JSON-array staging read it as nothing, too).
        records = [_parse(line) for line in lines[start : start + _CHUNK_ROWS] if line.strip()]
        if not records:
            continue
        statement = _STAGE_FULL if len(records) == _CHUNK_ROWS else _stage_sql(len(records))
        try:
            try:
                conn.execute(statement, [value for record in records for value in _row(record)])
            except (sqlite3.ProgrammingError, sqlite3.InterfaceError, OverflowError):
                # A value sqlite3 cannot bind (an object in a plain column, a 64-bit-plus integer):
                # nothing of the statement ran; bind the chunk again with every column converted.
                conn.execute(statement, [value for record in records for value in _row_exact(record)])
        except (TypeError, OverflowError) as error:
            # A value not even that makes storable (JSON nested past orjson's 254 levels, an integer
            # past a float's range): refused data, so the writer stores the batch line by line and sets
            # this line aside, rather than retrying the whole batch as if the store were down.
            raise ValueError(f"a journal line holds a value the store cannot keep: {error}") from None


_ERASED_IN_BATCH = (
    "SELECT DISTINCT id FROM temp.batch WHERE user_id IS NOT NULL AND EXISTS (SELECT 1 FROM main.erasures e "
    "WHERE e.user_id = opsgate_user_hash(temp.batch.user_id) AND e.erased_at >= temp.batch.ts)"
)
# Text searches whose window starts within this long bound the FTS walk by rowid (see text_condition).
_BOUNDED_SEARCH_SECONDS = 2 * 86400
_SLO_ROLLUPS = tuple(
    rollups.rollup_upsert(table, seconds, "temp.batch", rollups.SQLITE_BUCKET)
    for table, seconds in ((rollups.FINE_TABLE, rollups.FINE_SECONDS), (rollups.HOUR_TABLE, rollups.HOUR_SECONDS))
)


def _drop_erased(conn: sqlite3.Connection) -> None:
    """Drop the batch's records of users erased after the request, and the online/shadow items copied
    from them: such an item stored before the erasure, while its request row was not there yet, was
    out of the erasure's reach (it finds copies through the request rows)."""
    late = [row[0] for row in conn.execute(_ERASED_IN_BATCH)]
    for start in range(0, len(late), 500):
        chunk = late[start : start + 500]
        marks = ",".join("?" * len(chunk))
        conn.execute(
            "DELETE FROM main.eval_scores WHERE (run_id, item_key) IN "
            f"(SELECT run_id, item_key FROM main.eval_items WHERE request_id IN ({marks}))",
            chunk,
        )
        conn.execute(f"DELETE FROM main.eval_items WHERE request_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM temp.batch WHERE id IN ({marks})", chunk)


class SqliteRecordStore(SqlRecordStore):
    """One connection per thread to a WAL database: the writer and readers never block each other."""

    dialect = "sqlite"
    transient_errors = TRANSIENT_ERRORS
    refused_data_errors = REFUSED_DATA_ERRORS

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self.connection() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            migrate_sqlite(conn)

    @classmethod
    def from_url(cls, url: str) -> SqliteRecordStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        return cls(url.removeprefix("sqlite:///"))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process crashes
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS batch ({_COLUMN_LIST})")
        conn.create_function("opsgate_user_hash", 1, user_hash, deterministic=True)
        with self._lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        yield conn

    @contextmanager
    def transaction(self, conn: Any) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: take the write lock up front, never upgrade mid-way."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def insert_lines(self, conn: Any, lines: list[bytes]) -> int:
        """Stage the batch in a temp table, drop what is stored already or belongs to an erased
        user, then insert and roll up with set-based SQL (staging: see ``_stage``)."""
        conn.execute("DELETE FROM temp.batch")
        _stage(conn, lines)
        if conn.execute("SELECT EXISTS (SELECT 1 FROM erasures)").fetchone()[0]:
            _drop_erased(conn)  # journaled before the user's erasure, arriving after it
        conn.execute(
            "DELETE FROM temp.batch WHERE id IN (SELECT id FROM main.requests) "
            "OR rowid NOT IN (SELECT min(rowid) FROM temp.batch GROUP BY id)"
        )
        inserted = int(
            conn.execute(
                f"INSERT INTO main.requests ({_COLUMN_LIST}, stored_at) SELECT {_COLUMN_LIST}, ? FROM temp.batch",
                [time.time()],
            ).rowcount
        )
        conn.execute(
            f"INSERT INTO usage_daily ({USAGE_COLUMNS}) "
            "SELECT strftime('%Y-%m-%d', ts, 'unixepoch'), coalesce(tenant, ''), coalesce(model, ''), "
            "coalesce(user_id, ''), count(*), sum(status >= 400), coalesce(sum(prompt_tokens), 0), "
            "coalesce(sum(completion_tokens), 0), coalesce(sum(cost), 0), count(cost), coalesce(sum(latency_ms), 0) "
            f"FROM temp.batch WHERE true GROUP BY 1, 2, 3, 4 {USAGE_UPSERT}"
        )
        for statement in _SLO_ROLLUPS:
            conn.execute(statement)
        return inserted

    def text_condition(self, text: str, since: float | None = None) -> tuple[str, list[Any]]:
        """FTS5 trigram match as a phrase; shorter than 3 characters falls back to LIKE.

        For a recent ``since`` the FTS walk starts at the smallest rowid of any row with
        ``ts >= since`` (exact, whatever the write order), so a frequent term yields that window's
        matches instead of every match in the log (20x faster for "the last day" on 300,000 rows).
        Finding that rowid scans the window's part of the ``ts`` index, so older windows skip it.
        """
        if len(text) < 3:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            return "(input_text LIKE ? ESCAPE '\\' OR output_text LIKE ? ESCAPE '\\')", [pattern, pattern]
        phrase = '"' + text.replace('"', '""') + '"'
        if since is None or time.time() - since > _BOUNDED_SEARCH_SECONDS:
            return "rowid IN (SELECT rowid FROM requests_fts WHERE requests_fts MATCH ?)", [phrase]
        return (
            "rowid IN (SELECT rowid FROM requests_fts WHERE requests_fts MATCH ? AND rowid >= "
            "(SELECT coalesce(min(rowid), 0) FROM requests INDEXED BY requests_ts WHERE ts >= ?))",
            [phrase, since],
        )

    def tag_condition(self, key: str, value: str) -> tuple[str, list[Any]]:
        """``json_extract`` on the gateway's tags or the client's metadata."""
        path = '$."' + key.replace('"', "") + '"'
        return "(json_extract(tags, ?) = ? OR json_extract(metadata, ?) = ?)", [path, value, path, value]

    def delete_limited(self, condition: str) -> str:
        """Delete by rowid in a bounded sub-select."""
        return f"DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests WHERE {condition} LIMIT ?)"

    def fts_integrity_check(self) -> None:
        """Raise if the FTS index disagrees with the table (used by tests after erasure/retention)."""
        with self.connection() as conn:
            conn.execute("INSERT INTO requests_fts(requests_fts, rank) VALUES ('integrity-check', 1)")

    def fts_matches(self, text: str) -> int:
        """Rows the FTS index itself returns for ``text`` (tests: nothing left after erasure)."""
        with self.connection() as conn:
            phrase = '"' + text.replace('"', '""') + '"'
            return int(
                conn.execute("SELECT COUNT(*) FROM requests_fts WHERE requests_fts MATCH ?", [phrase]).fetchone()[0]
            )

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
