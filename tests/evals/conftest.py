"""Evaluation tests use the real stores: a SQLite file and a PostgreSQL schema per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opsgate.evals.store import EvalStore
from opsgate.store.sql import SqlRecordStore
from tests.store.conftest import pg_url, store, store_url  # noqa: F401 - fixtures


@pytest.fixture()
def evals(store: SqlRecordStore) -> Iterator[EvalStore]:  # noqa: F811
    yield EvalStore(store)
