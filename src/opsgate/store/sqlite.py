"""The record store on SQLite (WAL): the embedded default, one file, FTS5 trigram search."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opsgate.store.migrations import migrate_sqlite
from opsgate.store.sql import SqlRecordStore


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
