"""Reads the SLO rollups, feedback and measurements: sums over a window, and per-bucket series.

Windows up to six hours read the 10-second table (at most 2,160 buckets per key); longer ones read
the hourly table (720 buckets for 30 days), so no query scans ``requests``. Call from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opsgate.store.rollups import FINE_SECONDS, FINE_TABLE, HOUR_SECONDS, HOUR_TABLE, SUM_COLUMNS
from opsgate.store.sql import SqlRecordStore

FINE_MAX_SECONDS = 6 * 3600  # windows up to this long use the 10-second table
FINE_KEEP_SECONDS = 8 * 86400  # 10-second buckets kept this long (dashboard series at minute steps)
FEEDBACK_COLUMNS = ("feedback", "positive", "score_count", "promoters", "detractors")
# A store, or a function that opens it on first use (the gateway's reader store may be down at start).
StoreSource = SqlRecordStore | Callable[[], SqlRecordStore]


def resolve(source: StoreSource) -> SqlRecordStore:
    """The store a source names."""
    return source if isinstance(source, SqlRecordStore) else source()


@dataclass(frozen=True)
class Scope:
    """Which traffic to read: every field None means all."""

    tenant: str | None = None
    model: str | None = None
    deployment: str | None = None

    def conditions(self) -> tuple[str, list[Any]]:
        """AND-ed equality conditions (with a leading AND) and their parameters."""
        parts, params = [], []
        for column in ("tenant", "model", "deployment"):
            value = getattr(self, column)
            if value is not None:
                parts.append(f" AND {column} = ?")
                params.append(value)
        return "".join(parts), params


def table_for(span_seconds: float) -> tuple[str, int]:
    """The rollup table and its bucket width for a window or range of ``span_seconds``."""
    if span_seconds <= FINE_MAX_SECONDS:
        return FINE_TABLE, FINE_SECONDS
    return HOUR_TABLE, HOUR_SECONDS


def bucket_sql(store: SqlRecordStore, column: str, seconds: int) -> str:
    """The dialect's expression for the start of ``seconds``-wide buckets of an epoch column."""
    if store.dialect == "postgres":
        return f"(floor({column} / {seconds}) * {seconds})::bigint"
    return f"(CAST({column} AS INTEGER) / {seconds}) * {seconds}"


_FEEDBACK_SELECT = (
    "count(*), coalesce(sum(positive), 0), count(score), "
    "count(CASE WHEN score >= 5 THEN 1 END), count(CASE WHEN score <= 3 THEN 1 END)"
)

# One rating per request counts: its latest (by time, then id). Every post is kept, but a client that
# rated one answer 300 times "down" paged the operators through a global CSAT objective; the
# canary rollback already read ratings this way. Uses the feedback_request index.
LATEST_FEEDBACK = (
    "NOT EXISTS (SELECT 1 FROM feedback newer WHERE newer.request_id = feedback.request_id "
    "AND (newer.ts > feedback.ts OR (newer.ts = feedback.ts AND newer.id > feedback.id)))"
)


class RollupReader:
    """Queries for the SLO engine, over one store."""

    def __init__(self, source: StoreSource) -> None:
        self._source = source

    @property
    def store(self) -> SqlRecordStore:
        """The store to read."""
        return resolve(self._source)

    def _rows(self, statement: str, params: list[Any]) -> list[Any]:
        with self.store.connection() as conn:
            return list(self.store.execute(conn, statement, params).fetchall())

    def sums(self, since: float, scope: Scope, window_seconds: float | None = None) -> dict[str, float]:
        """Every rollup column summed from ``since`` to now (bucket-aligned: up to one bucket more)."""
        table, width = table_for(window_seconds if window_seconds is not None else 0)
        where, params = scope.conditions()
        start = int(since // width) * width
        statement = (
            f"SELECT {', '.join(f'coalesce(sum({c}), 0)' for c in SUM_COLUMNS)} FROM {table} WHERE bucket >= ?{where}"
        )
        row = self._rows(statement, [start, *params])[0]
        return {column: float(value) for column, value in zip(SUM_COLUMNS, row, strict=True)}

    def series(
        self, since: float, until: float, step: int, scope: Scope, table: str
    ) -> list[tuple[int, dict[str, float]]]:
        """Rollup sums per ``step`` seconds (a multiple of the table's width), oldest first; empty steps left out."""
        where, params = scope.conditions()
        start = int(since // step) * step
        statement = (
            f"SELECT (bucket / {step}) * {step}, {', '.join(f'sum({c})' for c in SUM_COLUMNS)} FROM {table} "
            f"WHERE bucket >= ? AND bucket <= ?{where} GROUP BY 1 ORDER BY 1"
        )
        out = []
        for row in self._rows(statement, [start, until, *params]):
            out.append((int(row[0]), {c: float(v or 0) for c, v in zip(SUM_COLUMNS, row[1:], strict=True)}))
        return out

    def feedback_sums(self, since: float, scope: Scope) -> dict[str, float]:
        """Feedback counts from ``since``: all, positive, numeric scores, promoters (5) and detractors (≤ 3)."""
        where, params = scope.conditions()
        row = self._rows(
            f"SELECT {_FEEDBACK_SELECT} FROM feedback WHERE ts >= ?{where} AND {LATEST_FEEDBACK}", [since, *params]
        )[0]
        return {c: float(v or 0) for c, v in zip(FEEDBACK_COLUMNS, row, strict=True)}

    def feedback_series(self, since: float, step: int, scope: Scope) -> list[tuple[int, dict[str, float]]]:
        """Feedback counts per ``step`` seconds, oldest first."""
        where, params = scope.conditions()
        bucket = bucket_sql(self.store, "ts", step)
        statement = (
            f"SELECT {bucket}, {_FEEDBACK_SELECT} FROM feedback WHERE ts >= ?{where} AND {LATEST_FEEDBACK} "
            "GROUP BY 1 ORDER BY 1"
        )
        return [
            (int(row[0]), {c: float(v or 0) for c, v in zip(FEEDBACK_COLUMNS, row[1:], strict=True)})
            for row in self._rows(statement, [since, *params])
        ]

    def measurements(self, slo: str, since: float, tenant: str | None) -> list[tuple[float, float]]:
        """(ts, value) of an SLO's measurements from ``since``, oldest first; ``tenant`` None: global ones."""
        condition = "tenant IS NULL" if tenant is None else "tenant = ?"
        params: list[Any] = [slo, since] if tenant is None else [slo, since, tenant]
        rows = self._rows(
            f"SELECT ts, value FROM slo_measurements WHERE slo = ? AND ts >= ? AND {condition} ORDER BY ts", params
        )
        return [(float(ts), float(value)) for ts, value in rows]

    def add_measurement(self, slo: str, ts: float, value: float, tenant: str | None) -> None:
        """Store one measurement of a measured SLI (guard detection, eval degradation, data freshness)."""
        with self.store.connection() as conn, self.store.transaction(conn):
            self.store.execute(
                conn,
                "INSERT INTO slo_measurements (slo, ts, value, tenant) VALUES (?, ?, ?, ?)",
                [slo, ts, value, tenant],
            )

    def prune_fine(self, older_than: float) -> int:
        """Delete 10-second buckets older than ``older_than`` (the hourly table keeps the history)."""
        with self.store.connection() as conn, self.store.transaction(conn):
            cursor = self.store.execute(conn, f"DELETE FROM {FINE_TABLE} WHERE bucket < ?", [int(older_than)])
            return max(int(cursor.rowcount), 0)
