"""Stores under test: a real SQLite file, and a real PostgreSQL schema created and dropped per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from opsgate.store.sql import SqlRecordStore

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pg_schema_url(schema: str) -> str:
    return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def fresh_pg_schema(prefix: str = "opsgate_test") -> Iterator[str]:
    """The URL of a new schema in the real PostgreSQL server's ``test`` database, dropped on exit."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield pg_schema_url(schema)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh schema in the real PostgreSQL server's ``test`` database, dropped afterwards."""
    with fresh_pg_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/requests.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture()
def store(store_url: str) -> Iterator[SqlRecordStore]:
    from opsgate.store.record_log import open_store

    opened = open_store(store_url)
    yield opened
    opened.close()
