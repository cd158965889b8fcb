"""The audit log as a hash chain: each entry commits to the one before it, so edits and deletions show.

Every row of ``audit_log`` stores ``prev_hash`` and ``hash = SHA-256(canonical(prev_hash, seq, ts,
actor, action, target, details))``. Appends are serialised across processes (SQLite: the store's
``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), so two writers never chain
onto the same entry and the chain never forks.

Rows written before the chain existed (migration ``0003_audit_chain`` adds the columns) have no
hash. They are folded into the chain rather than trusted: the running hash over them, computed the
same way from ``GENESIS``, is the ``prev_hash`` of the first chained entry, so changing or deleting
a pre-chain row is detected too.

A chain alone cannot show that its newest entries were cut off, or that someone with write access
rewrote the whole table with fresh hashes; ``verify_chain(anchor=...)`` checks a head recorded
earlier (``opsgate audit verify`` prints it) to catch both.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from opsgate.store.sql import SqlRecordStore

GENESIS = "0" * 64
# Held for the append's transaction on PostgreSQL; 7041911 is the migration lock.
APPEND_LOCK = 7041912
_COLUMNS = "seq, ts, actor, action, target, details, prev_hash, hash"
_PAGE = 2000


def canonical_details(details: dict[str, Any] | None) -> str | None:
    """The stored form of ``details``: compact JSON with sorted keys (so equal dicts hash equal)."""
    if details is None:
        return None
    return orjson.dumps(details, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def entry_hash(
    prev_hash: str, seq: int, ts: float, actor: str | None, action: str, target: str | None, details: str | None
) -> str:
    """SHA-256 (hex) over a canonical encoding of one entry and the hash before it.

    A JSON array, so field boundaries are unambiguous; ``ts`` as a float (shortest round-trip
    form), which SQLite REAL and PostgreSQL DOUBLE PRECISION both return bit for bit.
    """
    encoded = orjson.dumps([prev_hash, int(seq), float(ts), actor, action, target, details])
    return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One chained audit entry, as stored."""

    seq: int
    ts: float
    actor: str | None
    action: str
    target: str | None
    details: dict[str, Any] | None
    prev_hash: str | None
    hash: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def lock_chain(store: SqlRecordStore, conn: Any) -> None:
    """Take the append lock inside the open write transaction on ``conn`` (held until it ends)."""
    # SQLite: the store's transactions are BEGIN IMMEDIATE, which already holds the database's one
    # write lock. PostgreSQL: rows are not enough (two appenders would both read the same head).
    if store.dialect == "postgres":
        store.execute(conn, "SELECT pg_advisory_xact_lock(?)", [APPEND_LOCK])


def _rows(store: SqlRecordStore, conn: Any, after: int | None = None) -> Iterator[tuple[Any, ...]]:
    """Every row in seq order, a page at a time."""
    last = after
    while True:
        if last is None:
            page = store.execute(conn, f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq LIMIT ?", [_PAGE]).fetchall()
        else:
            page = store.execute(
                conn, f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?", [last, _PAGE]
            ).fetchall()
        yield from page
        if len(page) < _PAGE:
            return
        last = page[-1][0]


def _head(store: SqlRecordStore, conn: Any) -> str:
    """The hash the next entry chains onto (call with the append lock held)."""
    row = store.execute(conn, "SELECT hash FROM audit_log WHERE hash IS NOT NULL ORDER BY seq DESC LIMIT 1").fetchone()
    if row is not None:
        return str(row[0])
    running = GENESIS  # no chained entry yet: fold the pre-chain rows in
    for seq, ts, actor, action, target, details, _prev, _hash in _rows(store, conn):
        running = entry_hash(running, seq, ts, actor, action, target, details)
    return running


def append_entry(
    store: SqlRecordStore,
    conn: Any,
    actor: str | None,
    action: str,
    target: str | None,
    details: dict[str, Any] | None,
    ts: float | None = None,
) -> AuditEntry:
    """Chain one entry onto the log inside the caller's open write transaction on ``conn``.

    For callers that must audit atomically with their own change (an erasure); everyone else uses
    ``append_audit``.
    """
    lock_chain(store, conn)
    ts = time.time() if ts is None else float(ts)
    prev = _head(store, conn)
    row = store.execute(conn, "SELECT max(seq) FROM audit_log").fetchone()
    seq = int(row[0] or 0) + 1
    text = canonical_details(details)
    digest = entry_hash(prev, seq, ts, actor, action, target, text)
    store.execute(
        conn,
        "INSERT INTO audit_log (seq, ts, actor, action, target, details, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
        [seq, ts, actor, action, target, text, prev, digest],
    )
    if store.dialect == "postgres":
        # seq is given explicitly; keep the BIGSERIAL sequence level so a plain INSERT cannot collide.
        store.execute(conn, "SELECT setval(pg_get_serial_sequence('audit_log', 'seq'), ?)", [seq])
    return AuditEntry(seq, ts, actor, action, target, details, prev, digest)


def append_in_transaction(
    store: SqlRecordStore, actor: str | None, action: str, target: str | None, details: dict[str, Any] | None
) -> AuditEntry:
    """Append one entry in a transaction of its own (blocking: call from a worker thread)."""
    with store.connection() as conn, store.transaction(conn):
        return append_entry(store, conn, actor, action, target, details)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What ``verify_chain`` found. ``first_broken_seq`` is None when the chain is intact."""

    ok: bool
    entries: int
    legacy_entries: int
    first_broken_seq: int | None
    problem: str | None
    head_seq: int | None
    head_hash: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def verify_chain(store: SqlRecordStore, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Walk the whole chain in seq order and report the first entry that does not fit.

    ``anchor``: a ``(seq, hash)`` head recorded earlier; the entry must still be there, unchanged.
    Blocking: call from a worker thread.
    """
    running = GENESIS
    entries = legacy = 0
    chained = False
    last_seq: int | None = None
    broken: tuple[int, str] | None = None
    anchor_seen = anchor is None
    with store.connection() as conn:
        for seq, ts, actor, action, target, details, prev_hash, stored_hash in _rows(store, conn):
            entries += 1
            if stored_hash is None:
                if chained:
                    broken = (seq, "entry has no hash although the chain had begun (inserted outside the chain)")
                    break
                legacy += 1
                running = entry_hash(running, seq, ts, actor, action, target, details)
                last_seq = seq
                if anchor is not None and seq == anchor[0]:
                    anchor_seen = True
                    if running != anchor[1]:
                        broken = (seq, "entry differs from the recorded anchor: the log was rewritten")
                        break
                continue
            if prev_hash != running:
                where = "the entry before it" if chained else "the pre-chain entries"
                gap = (
                    f" (entries {last_seq + 1}..{seq - 1} are missing)"
                    if last_seq is not None and seq > last_seq + 1
                    else ""
                )
                broken = (seq, f"prev_hash does not match {where}: deleted or changed{gap}")
                break
            if entry_hash(prev_hash, seq, ts, actor, action, target, details) != stored_hash:
                broken = (seq, "entry content does not match its hash: changed after it was written")
                break
            chained = True
            running = stored_hash
            last_seq = seq
            if anchor is not None and seq == anchor[0]:
                anchor_seen = True
                if stored_hash != anchor[1]:
                    broken = (seq, "entry differs from the recorded anchor: the chain was rewritten")
                    break
    if broken is None and not anchor_seen:
        assert anchor is not None
        broken = (anchor[0], "the anchored entry is gone: the log was truncated or rewritten")
    return ChainReport(
        ok=broken is None,
        entries=entries,
        legacy_entries=legacy,
        first_broken_seq=broken[0] if broken else None,
        problem=broken[1] if broken else None,
        head_seq=last_seq,
        head_hash=running if last_seq is not None else None,
    )


def list_entries(store: SqlRecordStore, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
    """The newest entries (optionally of one action), newest first, with their hashes."""
    where, params = ("WHERE action = ? ", [action]) if action else ("", [])
    with store.connection() as conn:
        rows = store.execute(
            conn, f"SELECT {_COLUMNS} FROM audit_log {where}ORDER BY seq DESC LIMIT ?", [*params, limit]
        ).fetchall()
    return [
        AuditEntry(int(r[0]), float(r[1]), r[2], r[3], r[4], orjson.loads(r[5]) if r[5] else None, r[6], r[7])
        for r in rows
    ]
