"""Where dashboard sessions live: table ``ui_sessions`` in the gateway's database, or memory without one.

Rows are keyed by the SHA-256 of the session id (the cookie's value), never the id itself, so a read
of the table (a backup, a replica) cannot be replayed as a cookie. Neither the API key nor a hash of
it is stored: a session names the key by ``key_id``, and the key's own row says whether it still works.
The bootstrap key has no row; its sessions carry ``key_check``, a slow hash (scrypt) of it, so that
changing ``auth.admin_key`` ends them and a weak admin key cannot be guessed from the table cheaply.
In the database every replica sees a login, a logout and a sweep at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from opsgate.store.sql import SqlRecordStore

_TABLE = (
    "CREATE TABLE ui_sessions (id_hash TEXT PRIMARY KEY, key_id TEXT NOT NULL, key_check TEXT, tenant TEXT, "
    "created_at {real} NOT NULL, last_seen {real} NOT NULL, expires_at {real} NOT NULL)"
)
_INDEXES = (
    "CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at)",
    "CREATE INDEX ui_sessions_last_seen ON ui_sessions (last_seen)",
)
# The migration (store/migrations.py, 0015_ui_sessions).
SQLITE = (_TABLE.format(real="REAL"), *_INDEXES)
POSTGRES = (_TABLE.format(real="DOUBLE PRECISION"), *_INDEXES)
_COLUMNS = "id_hash, key_id, key_check, tenant, created_at, last_seen, expires_at"


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One dashboard session as stored: who it acts for and its times (epoch seconds)."""

    id_hash: str
    key_id: str
    key_check: str | None
    tenant: str | None
    created_at: float
    last_seen: float
    expires_at: float

    def seen(self, now: float) -> SessionRow:
        """This row, last used at ``now``."""
        return replace(self, last_seen=now)


class SessionStore(Protocol):
    """Synchronous session storage: call from a worker thread."""

    def create(self, row: SessionRow) -> None:
        """Keep a new session."""

    def get(self, id_hash: str) -> SessionRow | None:
        """The session with this id hash, or None."""

    def touch(self, id_hash: str, last_seen: float) -> None:
        """Record that the session was used at ``last_seen``."""

    def delete(self, id_hash: str) -> None:
        """End one session (logout, or found expired)."""

    def sweep(self, now: float, idle_seconds: float) -> int:
        """Delete sessions past their lifetime or idle too long; how many."""

    def trim(self, key_id: str, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest sessions of ``key_id``; the id hashes deleted."""


class SqlSessionStore:
    """Sessions in the record store's database (SQLite or PostgreSQL): shared by every replica."""

    def __init__(self, store: Callable[[], SqlRecordStore]) -> None:
        self._store = store  # opened lazily, like the key store

    def create(self, row: SessionRow) -> None:
        """Insert ``row``."""
        store = self._store()
        with store.connection() as conn, store.transaction(conn):
            store.execute(
                conn,
                f"INSERT INTO ui_sessions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                [row.id_hash, row.key_id, row.key_check, row.tenant, row.created_at, row.last_seen, row.expires_at],
            )

    def get(self, id_hash: str) -> SessionRow | None:
        """One row by its id hash."""
        store = self._store()
        with store.connection() as conn:
            found = store.execute(conn, f"SELECT {_COLUMNS} FROM ui_sessions WHERE id_hash = ?", [id_hash]).fetchone()
        return _row(found) if found is not None else None

    def touch(self, id_hash: str, last_seen: float) -> None:
        """Move ``last_seen`` forward (never back: replicas may touch out of order)."""
        self._write(
            "UPDATE ui_sessions SET last_seen = ? WHERE id_hash = ? AND last_seen < ?", [last_seen, id_hash, last_seen]
        )

    def delete(self, id_hash: str) -> None:
        """Delete one row."""
        self._write("DELETE FROM ui_sessions WHERE id_hash = ?", [id_hash])

    def sweep(self, now: float, idle_seconds: float) -> int:
        """Delete expired and idle rows."""
        return self._write("DELETE FROM ui_sessions WHERE expires_at <= ? OR last_seen <= ?", [now, now - idle_seconds])

    def trim(self, key_id: str, keep: int) -> list[str]:
        """Delete the sessions of ``key_id`` older than its ``keep`` newest (one transaction)."""
        store = self._store()
        with store.connection() as conn, store.transaction(conn):
            found = store.execute(
                conn, "SELECT id_hash FROM ui_sessions WHERE key_id = ? ORDER BY created_at DESC, id_hash", [key_id]
            ).fetchall()
            gone = [str(row[0]) for row in found[keep:]]
            if gone:
                marks = ",".join("?" * len(gone))
                store.execute(conn, f"DELETE FROM ui_sessions WHERE id_hash IN ({marks})", gone)
        return gone

    def _write(self, statement: str, params: list[Any]) -> int:
        store = self._store()
        with store.connection() as conn, store.transaction(conn):
            cursor = store.execute(conn, statement, params)
            return int(cursor.rowcount or 0)


class MemorySessionStore:
    """Sessions in this process, for a gateway without a database (one replica: only the bootstrap key)."""

    def __init__(self, max_sessions: int = 10_000) -> None:
        self._rows: dict[str, SessionRow] = {}
        self._lock = threading.Lock()
        self._max = max_sessions

    def create(self, row: SessionRow) -> None:
        """Keep ``row``; the oldest session goes when the bound is reached."""
        with self._lock:
            if len(self._rows) >= self._max:
                oldest = min(self._rows.values(), key=lambda r: r.created_at)
                del self._rows[oldest.id_hash]
            self._rows[row.id_hash] = row

    def get(self, id_hash: str) -> SessionRow | None:
        """One row."""
        with self._lock:
            return self._rows.get(id_hash)

    def touch(self, id_hash: str, last_seen: float) -> None:
        """Move ``last_seen`` forward."""
        with self._lock:
            row = self._rows.get(id_hash)
            if row is not None and row.last_seen < last_seen:
                self._rows[id_hash] = row.seen(last_seen)

    def delete(self, id_hash: str) -> None:
        """Forget one row."""
        with self._lock:
            self._rows.pop(id_hash, None)

    def sweep(self, now: float, idle_seconds: float) -> int:
        """Forget expired and idle rows."""
        with self._lock:
            gone = [h for h, r in self._rows.items() if r.expires_at <= now or r.last_seen <= now - idle_seconds]
            for id_hash in gone:
                del self._rows[id_hash]
            return len(gone)

    def trim(self, key_id: str, keep: int) -> list[str]:
        """Forget the sessions of ``key_id`` older than its ``keep`` newest."""
        with self._lock:
            own = sorted(
                (r for r in self._rows.values() if r.key_id == key_id), key=lambda r: (-r.created_at, r.id_hash)
            )
            gone = [r.id_hash for r in own[keep:]]
            for id_hash in gone:
                del self._rows[id_hash]
            return gone


def _row(values: Any) -> SessionRow:
    id_hash, key_id, key_check, tenant, created_at, last_seen, expires_at = values
    return SessionRow(id_hash, key_id, key_check, tenant, float(created_at), float(last_seen), float(expires_at))
