"""The record store on SQLite (WAL): the embedded default, one file, FTS5 trigram search."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opsgate.store.migrations import migrate_sqlite
from opsgate.store.sql import COLUMNS, USAGE_COLUMNS, USAGE_UPSERT, SqlRecordStore, user_hash

_COLUMN_LIST = ", ".join(COLUMNS)
_EXTRACTS = ", ".join(
    f"coalesce(json_extract(value, '$.{c}'), 0)" if c in ("stream", "cached") else f"json_extract(value, '$.{c}')"
    for c in COLUMNS
)


def _sha256(value: str | None) -> str | None:
    return None if value is None else user_hash(value)


class SqliteRecordStore(SqlRecordStore):
    """One connection per thread to a WAL database: the writer and readers never block each other."""

    dialect = "sqlite"

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
        conn.create_function("opsgate_sha256", 1, _sha256, deterministic=True)
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS batch ({', '.join(COLUMNS)})")
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

    def insert_json_batch(self, conn: Any, batch: str) -> int:
        """json_each unpacks the batch into a temp table; the rest is set-based SQL."""
        conn.execute("DELETE FROM temp.batch")
        conn.execute(f"INSERT INTO temp.batch ({_COLUMN_LIST}) SELECT {_EXTRACTS} FROM json_each(?)", [batch])
        # Skip what is stored already, and repeats within the batch (a replayed journal).
        conn.execute(
            "DELETE FROM temp.batch WHERE id IN (SELECT id FROM main.requests) "
            "OR rowid NOT IN (SELECT min(rowid) FROM temp.batch GROUP BY id)"
        )
        if conn.execute("SELECT EXISTS (SELECT 1 FROM erasures)").fetchone()[0]:
            # Journaled before the user's erasure, arriving after it: dropped.
            conn.execute(
                "DELETE FROM temp.batch WHERE user_id IS NOT NULL AND EXISTS (SELECT 1 FROM erasures e "
                "WHERE e.user_id = opsgate_sha256(temp.batch.user_id) AND e.erased_at >= temp.batch.ts)"
            )
        inserted = int(
            conn.execute(f"INSERT INTO main.requests ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM temp.batch").rowcount
        )
        conn.execute(
            f"INSERT INTO usage_daily ({USAGE_COLUMNS}) "
            "SELECT strftime('%Y-%m-%d', ts, 'unixepoch'), coalesce(tenant, ''), coalesce(model, ''), "
            "coalesce(user_id, ''), count(*), sum(status >= 400), coalesce(sum(prompt_tokens), 0), "
            "coalesce(sum(completion_tokens), 0), coalesce(sum(cost), 0), count(cost), coalesce(sum(latency_ms), 0) "
            f"FROM temp.batch WHERE true GROUP BY 1, 2, 3, 4 {USAGE_UPSERT}"
        )
        conn.execute("DELETE FROM temp.batch")
        return inserted

    def text_condition(self, text: str) -> tuple[str, list[Any]]:
        """FTS5 trigram match as a phrase; shorter than 3 characters falls back to LIKE."""
        if len(text) < 3:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            return "(input_text LIKE ? ESCAPE '\\' OR output_text LIKE ? ESCAPE '\\')", [pattern, pattern]
        phrase = '"' + text.replace('"', '""') + '"'
        return "rowid IN (SELECT rowid FROM requests_fts WHERE requests_fts MATCH ?)", [phrase]

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
