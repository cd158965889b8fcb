"""Stores under test: a real SQLite file, and a real PostgreSQL schema created and dropped per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from opsgate.store.sql import SqlRecordStore

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pg_schema_url(schema: str) -> str:
    return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh schema in the real PostgreSQL server's ``test`` database, dropped afterwards."""
    schema = f"opsgate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield pg_schema_url(schema)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


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
