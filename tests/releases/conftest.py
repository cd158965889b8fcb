"""Shared fixtures: a record store on each dialect for store-level releases tests (SQLite in a temporary
folder, and a fresh schema on the local PostgreSQL 127.0.0.1:5432 db ``test``, as ``test_postgres``), dropped after."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsgate.releases.store import ReleaseStore
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
SPEC: dict[str, Any] = {"deployments": None, "prompt": None, "parameters": {}}


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlRecordStore]:
    """An empty, migrated store on each dialect."""
    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path}/r.db")
        yield opened
        opened.close()
        return
    schema = f"opsgate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    opened = open_store(f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}")
    try:
        yield opened
    finally:
        opened.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def start_canary(store: SqlRecordStore, weight: float = 50) -> str:
    """Two releases of ``up``, the first active and the second a canary; returns the experiment id."""
    releases = ReleaseStore(store)
    base = releases.create("up", SPEC, None, "t")
    candidate = releases.create("up", SPEC, None, "t")
    releases.activate("up", base.id, "t")
    state = releases.canary("up", candidate.id, weight, "t")
    assert state.experiment is not None
    return state.experiment


def write_records(
    store: SqlRecordStore,
    experiment: str,
    arm: str,
    tenant: str | None,
    n: int,
    status: int = 200,
    tags: dict[str, Any] | None = None,
    cached: bool = False,
    latency_ms: float = 50.0,
) -> list[str]:
    """``n`` request records of one arm and tenant, as the release stage tags them."""
    now = time.time()
    ids = [f"{tenant}-{arm}-{status}-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    store.write_batch(
        [
            {"id": rid, "ts": now, "tenant": tenant, "endpoint": "chat", "model": "up", "status": status,
             "latency_ms": latency_ms, "tags": {"experiment": experiment, "arm": arm, **(tags or {})},
             "experiment": experiment, "arm": arm, "cached": cached}
            for rid in ids
        ]
    )  # fmt: skip
    return ids
