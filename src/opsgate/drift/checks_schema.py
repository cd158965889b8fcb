"""Drift check results, kept for history and the /ui drift page (issue 15).

One row per check: the result dict as JSON, with the columns a listing filters on. ``tenant`` is ''
for a check over every tenant of an alias.

A released migration is never edited; change the schema with a new migration.
"""

from __future__ import annotations


def _statements(real: str, serial: str) -> tuple[str, ...]:
    return (
        f"CREATE TABLE drift_checks (id {serial}, alias TEXT NOT NULL, tenant TEXT NOT NULL, "
        f"checked_at {real} NOT NULL, drifted INTEGER NOT NULL, score {real} NOT NULL, "
        "insufficient INTEGER NOT NULL, result TEXT NOT NULL)",
        "CREATE INDEX drift_checks_alias_tenant_at ON drift_checks (alias, tenant, checked_at)",
        "CREATE INDEX drift_checks_tenant_at ON drift_checks (tenant, checked_at)",
        "CREATE INDEX drift_checks_at ON drift_checks (checked_at)",
    )


SQLITE: tuple[str, ...] = _statements("REAL", "INTEGER PRIMARY KEY")
POSTGRES: tuple[str, ...] = _statements("DOUBLE PRECISION", "BIGSERIAL PRIMARY KEY")
