"""A lease shared by replicas on one store: a one-row table (``id = 1``, ``holder``, ``expires``) whose
holder alone runs a schedule (the SLO evaluator's ``slo_leader``, the drift monitor's ``drift_leader``,
the sentinel's ``sentinel_lease``).

Taking it is one conditional UPDATE, so two replicas never both hold it: the row changes only for its
current holder (a renewal) or once the lease has expired.
"""

from __future__ import annotations

import time

from opsgate.store.sql import SqlRecordStore


def try_lead(store: SqlRecordStore, table: str, holder: str, ttl: float, now: float | None = None) -> bool:
    """Take or renew the lease in ``table`` (a constant, never input) for ``ttl`` seconds; False while
    another live holder has it."""
    now = time.time() if now is None else now
    with store.connection() as conn, store.transaction(conn):
        cursor = store.execute(
            conn,
            f"UPDATE {table} SET holder = ?, expires = ? WHERE id = 1 AND (holder = ? OR expires < ?)",
            [holder, now + ttl, holder, now],
        )
        return int(cursor.rowcount) == 1


def release(store: SqlRecordStore, table: str, holder: str) -> None:
    """Give the lease up (at shutdown) if ``holder`` has it, so another replica takes over at its next tick."""
    with store.connection() as conn, store.transaction(conn):
        store.execute(conn, f"UPDATE {table} SET expires = 0 WHERE id = 1 AND holder = ?", [holder])
