"""Drift windows: incrementally summarised per-bucket sketches and embedding samples (issue 15).

``drift_windows`` holds one row per (alias, bucket, tenant, replica): each replica upserts only its
own rows, so replicas never contend, and a reader merges the rows of a window. ``tenant`` is ''
for requests without a tenant (a primary key column cannot be NULL in PostgreSQL).
``drift_leader`` is the monitor's lease (one checking replica at a time); ``drift_baselines`` the
fixed reference windows set through the admin API.

A released migration is never edited; change the schema with a new migration.
"""

from __future__ import annotations


def _statements(real: str, blob: str) -> tuple[str, ...]:
    return (
        "CREATE TABLE drift_windows (alias TEXT NOT NULL, bucket BIGINT NOT NULL, tenant TEXT NOT NULL, "
        f"replica TEXT NOT NULL, updated_at {real} NOT NULL, requests INTEGER NOT NULL, summary TEXT NOT NULL, "
        f"vectors {blob} NOT NULL, PRIMARY KEY (alias, bucket, tenant, replica))",
        "CREATE INDEX drift_windows_bucket ON drift_windows (bucket)",
        f"CREATE TABLE drift_leader (id INTEGER PRIMARY KEY, holder TEXT, expires {real} NOT NULL)",
        "INSERT INTO drift_leader (id, holder, expires) VALUES (1, NULL, 0)",
        "CREATE TABLE drift_baselines (alias TEXT NOT NULL, tenant TEXT NOT NULL, start_ts "
        f"{real} NOT NULL, end_ts {real} NOT NULL, created_at {real} NOT NULL, created_by TEXT, "
        "PRIMARY KEY (alias, tenant))",
    )


SQLITE: tuple[str, ...] = _statements("REAL", "BLOB")
POSTGRES: tuple[str, ...] = _statements("DOUBLE PRECISION", "BYTEA")
