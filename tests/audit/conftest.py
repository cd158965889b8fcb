"""The real stores of tests/store (a SQLite file and a scratch PostgreSQL schema), and raw-SQL tampering."""

from __future__ import annotations

from typing import Any

from opsgate.store.sql import SqlRecordStore
from tests.store.conftest import pg_url, store, store_url

__all__ = ["pg_url", "raw", "store", "store_url", "unprotect"]


def raw(store: SqlRecordStore, statement: str, params: list[Any] | None = None) -> None:
    """One statement outside the chain's code, in a transaction of its own: what an attacker would run."""
    with store.connection() as conn, store.transaction(conn):
        store.execute(conn, statement, params or [])


def unprotect(store: SqlRecordStore) -> None:
    """Drop the append-only triggers, as someone with DDL rights could."""
    if store.dialect == "postgres":
        raw(store, "DROP TRIGGER audit_log_append_only ON audit_log")
        raw(store, "DROP TRIGGER audit_log_no_truncate ON audit_log")
    else:
        raw(store, "DROP TRIGGER audit_log_no_update")
        raw(store, "DROP TRIGGER audit_log_no_delete")
