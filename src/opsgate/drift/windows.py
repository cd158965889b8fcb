"""The drift tables in the record store: bucket summaries, the monitor's lease and fixed baselines.

Blocking SQL; call from a worker thread. A window read is one indexed range query over at most
(window / bucket) rows per (tenant, replica): 720 rows for 30 days of hourly buckets.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from opsgate.drift.summary import WindowSummary
from opsgate.slo.reader import StoreSource, resolve
from opsgate.store import lease as store_lease
from opsgate.store.sql import SqlRecordStore

NO_TENANT = ""  # the tenant column's value for requests without one


@dataclass(frozen=True)
class BucketRow:
    """One replica's summary of one bucket of one alias and tenant."""

    alias: str
    bucket: int
    tenant: str
    summary: WindowSummary


class WindowStore:
    """Reads and writes the drift tables."""

    def __init__(self, source: StoreSource) -> None:
        self._source = source

    @property
    def store(self) -> SqlRecordStore:
        """The store holding the tables."""
        return resolve(self._source)

    def write(self, replica: str, rows: Iterable[BucketRow], now: float | None = None) -> int:
        """Upsert this replica's rows (each replica owns its rows: no other writer touches them)."""
        now = time.time() if now is None else now
        values = []
        for row in rows:
            data, blob = row.summary.to_row()
            values.append(
                (
                    row.alias,
                    row.bucket,
                    row.tenant,
                    replica,
                    now,
                    row.summary.requests,
                    orjson.dumps(data).decode(),
                    blob,
                )
            )
        if not values:
            return 0
        statement = (
            "INSERT INTO drift_windows (alias, bucket, tenant, replica, updated_at, requests, summary, vectors) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alias, bucket, tenant, replica) DO UPDATE SET "
            "updated_at = excluded.updated_at, requests = excluded.requests, summary = excluded.summary, "
            "vectors = excluded.vectors"
        )
        with self.store.connection() as conn, self.store.transaction(conn):
            for value in values:
                self.store.execute(conn, statement, value)
        return len(values)

    def read(self, alias: str, tenant: str | None, start: int, end: int, capacity: int) -> tuple[WindowSummary, int]:
        """The merged summary of buckets in [start, end) of ``alias`` (``tenant`` None: every tenant)
        and the number of rows read."""
        conditions = "alias = ? AND bucket >= ? AND bucket < ?"
        params: list[Any] = [alias, start, end]
        if tenant is not None:
            conditions += " AND tenant = ?"
            params.append(tenant)
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn, f"SELECT summary, vectors FROM drift_windows WHERE {conditions}", params
            ).fetchall()
        parts = [WindowSummary.from_row(orjson.loads(row[0]), bytes(row[1]), capacity) for row in rows]
        return WindowSummary.merge_all(parts, capacity), len(parts)

    def own_row(self, replica: str, alias: str, bucket: int, tenant: str, *, capacity: int) -> WindowSummary | None:
        """This replica's stored summary of one bucket (to add late records to it)."""
        with self.store.connection() as conn:
            row = self.store.execute(
                conn,
                "SELECT summary, vectors FROM drift_windows "
                "WHERE alias = ? AND bucket = ? AND tenant = ? AND replica = ?",
                [alias, bucket, tenant, replica],
            ).fetchone()
        return WindowSummary.from_row(orjson.loads(row[0]), bytes(row[1]), capacity) if row else None

    def scopes(self, since: int) -> list[tuple[str, str]]:
        """Every (alias, tenant) with a bucket at or after ``since``."""
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn,
                "SELECT DISTINCT alias, tenant FROM drift_windows WHERE bucket >= ? ORDER BY alias, tenant",
                [since],
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def prune(self, before: float) -> int:
        """Delete buckets older than ``before`` (retention)."""
        with self.store.connection() as conn, self.store.transaction(conn):
            cursor = self.store.execute(conn, "DELETE FROM drift_windows WHERE bucket < ?", [int(before)])
            return max(int(cursor.rowcount), 0)

    def try_lead(self, holder: str, ttl: float, now: float | None = None) -> bool:
        """Take or renew the monitor's lease; False while another live holder has it."""
        return store_lease.try_lead(self.store, "drift_leader", holder, ttl, now)

    def leader(self) -> tuple[str | None, float]:
        """The lease's holder and expiry."""
        with self.store.connection() as conn:
            row = self.store.execute(conn, "SELECT holder, expires FROM drift_leader WHERE id = 1").fetchone()
        return (row[0], float(row[1])) if row else (None, 0.0)

    def release(self, holder: str) -> None:
        """Give the lease up at shutdown, so another replica takes over at its next tick."""
        store_lease.release(self.store, "drift_leader", holder)

    def set_baseline(self, alias: str, tenant: str, start: float, end: float, actor: str | None) -> bool:
        """Pin the fixed reference window of ``alias`` (and tenant, '' for all); False when it was pinned
        to exactly this window already (nothing written). One upsert: concurrent PUTs of a scope cannot
        collide on the primary key as a DELETE then INSERT did on PostgreSQL."""
        with self.store.connection() as conn, self.store.transaction(conn):
            row = self.store.execute(
                conn,
                "INSERT INTO drift_baselines (alias, tenant, start_ts, end_ts, created_at, created_by) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (alias, tenant) DO UPDATE SET "
                "start_ts = excluded.start_ts, end_ts = excluded.end_ts, created_at = excluded.created_at, "
                "created_by = excluded.created_by "
                "WHERE drift_baselines.start_ts <> excluded.start_ts OR drift_baselines.end_ts <> excluded.end_ts "
                "RETURNING 1",
                [alias, tenant, start, end, time.time(), actor],
            ).fetchone()
        return row is not None

    def baseline(self, alias: str, tenant: str) -> tuple[float, float] | None:
        """The pinned fixed reference of ``alias``/``tenant``, if one was set."""
        with self.store.connection() as conn:
            row = self.store.execute(
                conn, "SELECT start_ts, end_ts FROM drift_baselines WHERE alias = ? AND tenant = ?", [alias, tenant]
            ).fetchone()
        return (float(row[0]), float(row[1])) if row else None

    def clear_baseline(self, alias: str, tenant: str) -> bool:
        """Remove a pinned baseline; False when there was none."""
        with self.store.connection() as conn, self.store.transaction(conn):
            cursor = self.store.execute(
                conn, "DELETE FROM drift_baselines WHERE alias = ? AND tenant = ?", [alias, tenant]
            )
            return int(cursor.rowcount) > 0
