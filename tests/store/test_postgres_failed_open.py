"""A PostgreSQL store that cannot open leaves no pool behind (its threads reconnected and logged for minutes)."""

from __future__ import annotations

import threading
import time

import pytest

from opsgate.store.postgres import PostgresRecordStore
from tests.support import free_port


def pool_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("pool-"))


def test_a_failed_open_closes_its_pool() -> None:
    before = pool_threads()
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test?connect_timeout=1"
    with pytest.raises(Exception):  # noqa: B017 - psycopg_pool.PoolTimeout (no server answers there)
        PostgresRecordStore(url, pool_size=2)
    deadline = time.monotonic() + 30
    while pool_threads() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pool_threads() <= before, [t.name for t in threading.enumerate()]
