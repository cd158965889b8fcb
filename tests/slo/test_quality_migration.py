"""Migration 0010 on SQLite and PostgreSQL: a database made by the release before, with rows and
rollups, upgrades in place; old rows count as not flagged, new ones are counted from then on."""

from __future__ import annotations

import time
from typing import Any

import pytest

from opsgate.slo import quality
from opsgate.slo.reader import RollupReader, Scope
from opsgate.store import migrations, rollups
from opsgate.store.quality_schema import FLAG_COLUMNS
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore
from tests.slo.conftest import make_record

QUALITY_COUNTS = [column for column, _ in FLAG_COLUMNS]
# An old row whose answer the PII scanner flagged: it still counts as not flagged (no backfill from tags).
OLD_TAGS = '{"guard": {"output": [{"scanner": "pii", "verdict": "fail"}]}}'


def before_0010() -> tuple[migrations.Migration, ...]:
    names = [m.name for m in migrations.MIGRATIONS]
    return migrations.MIGRATIONS[: names.index("0010_quality_slis")]


def insert_old_rows(store: SqlRecordStore, count: int, ts: float) -> None:
    """Rows and rollups as the release before wrote them: no quality_flags column anywhere."""
    bucket = rollups.POSTGRES_BUCKET if store.dialect == "postgres" else rollups.SQLITE_BUCKET
    with store.connection() as conn, store.transaction(conn):
        for n in range(count):
            store.execute(
                conn,
                "INSERT INTO requests (id, ts, endpoint, model, deployment, status, latency_ms, tags) "
                "VALUES (?, ?, 'chat', 'm', 'm#0', ?, 80.0, ?)",
                [
                    f"old-{n}",
                    ts,
                    200 if n % 4 else 503,
                    '{"guard": {"output": [{"scanner": "pii", "verdict": "fail"}]}}',
                ],
            )
        for table, seconds in ((rollups.FINE_TABLE, rollups.FINE_SECONDS), (rollups.HOUR_TABLE, rollups.HOUR_SECONDS)):
            store.execute(conn, rollups.rollup_upsert(table, seconds, "requests", bucket))


def columns(store: SqlRecordStore, table: str) -> list[str]:
    with store.connection() as conn:
        if store.dialect == "postgres":
            rows = store.execute(
                conn,
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "AND table_schema = current_schema() ORDER BY ordinal_position",
                [table],
            ).fetchall()
            return [r[0] for r in rows]
        return [r[1] for r in store.execute(conn, f"PRAGMA table_info({table})").fetchall()]


def test_upgrade_keeps_old_rows_unflagged_and_counts_new_ones(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    with monkeypatch.context() as patched:
        patched.setattr(migrations, "MIGRATIONS", before_0010())
        old = open_store(store_url)
        assert "quality_flags" not in columns(old, "requests")
        insert_old_rows(old, 8, now - 120)
        old.close()

    store = open_store(store_url)  # this release: 0010 (and later ones) run now
    try:
        assert "quality_flags" in columns(store, "requests")
        for table in (rollups.FINE_TABLE, rollups.HOUR_TABLE):
            assert set(QUALITY_COUNTS) <= set(columns(store, table))
        reader = RollupReader(store)
        for window in (600, 86400):
            sums = reader.sums(now - 600, Scope(), window)
            assert sums["requests"] == 8 and sums["errors"] == 2  # what was there is still there
            assert all(sums[c] == 0 for c in QUALITY_COUNTS)  # old rows count as not flagged
        with store.connection() as conn:
            nulls = store.execute(conn, "SELECT count(*) FROM requests WHERE quality_flags IS NULL").fetchone()[0]
        assert nulls == 8

        # New records, written by this release's writer, land in the same buckets and are counted.
        flagged: list[dict[str, Any]] = [
            make_record(now - 120, quality_flags=quality.ANSWERED | quality.PII_LEAK | quality.SCANNED),
            make_record(now - 120, quality_flags=quality.ANSWERED | quality.REFUSAL | quality.SCANNED),
            make_record(now - 120, quality_flags=quality.SCANNED | quality.INJECTION, status=400),
            make_record(now - 120, quality_flags=0),
        ]
        assert store.write_batch(flagged) == 4
        assert store.write_batch(flagged) == 0  # a replay counts nothing twice
        for window in (600, 86400):
            sums = reader.sums(now - 600, Scope(model="m"), window)
            assert sums["requests"] == 12
            assert {c: sums[c] for c in QUALITY_COUNTS} == {
                "q_scanned": 3,
                "q_answered": 2,
                "q_injection": 1,
                "q_pii_leak": 1,
                "q_toxic": 0,
                "q_low_confidence": 0,
                "q_refusal": 1,
            }
        # Reads (admin API, exports) do not return the write-only column; old and new rows read alike.
        for record_id in ("old-1", flagged[0]["id"]):
            record = store.get(record_id)
            assert record is not None and "quality_flags" not in record
    finally:
        store.close()


def test_fresh_database_backfill_sql_leaves_quality_columns_out() -> None:
    """Migration 0004 backfills from ``requests`` before 0010 adds quality_flags: its SQL must not name it."""
    for source in ("requests", "(SELECT * FROM requests WHERE ts >= 0) AS recent"):
        statement = rollups.rollup_upsert(rollups.HOUR_TABLE, rollups.HOUR_SECONDS, source, rollups.SQLITE_BUCKET)
        assert "quality_flags" not in statement and "q_refusal" not in statement
    for source in ("temp.batch", "ins"):
        statement = rollups.rollup_upsert(rollups.FINE_TABLE, rollups.FINE_SECONDS, source, rollups.SQLITE_BUCKET)
        assert "(quality_flags & 64) <> 0" in statement and "q_refusal = slo_rollup_10s.q_refusal" in statement
