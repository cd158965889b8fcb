"""The release cache's first load: a store that does not answer must not hold up the gateway's start."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from opsgate.releases.cache import ReleaseCache
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore


def test_a_store_that_does_not_answer_lets_the_start_go_on_and_loads_later(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    answer = threading.Event()

    def slow_store() -> SqlRecordStore:
        assert answer.wait(30)  # the store answers only when the test says so
        return store

    async def scenario() -> None:
        cache = ReleaseCache(slow_store, poll_seconds=3600)
        started = time.monotonic()
        await cache.start(wait_seconds=0.2)
        assert time.monotonic() - started < 10  # not the pool's timeout, not the test's 30 s
        assert cache.refreshes == 0 and cache.last_error and "not finished" in cache.last_error
        answer.set()
        deadline = time.monotonic() + 30
        while cache.refreshes == 0:
            assert time.monotonic() < deadline, cache.status()
            await asyncio.sleep(0.05)
        assert cache.last_error is None and cache.clock >= 0
        await cache.close()

    asyncio.run(scenario())


def test_a_first_load_that_fails_late_is_reported_and_polling_goes_on(tmp_path: Path) -> None:
    fail = threading.Event()

    def broken_store() -> SqlRecordStore:
        assert fail.wait(30)
        raise ConnectionError("store down")

    async def scenario() -> None:
        cache = ReleaseCache(broken_store, poll_seconds=3600)
        await cache.start(wait_seconds=0.2)
        fail.set()
        deadline = time.monotonic() + 30
        while "store down" not in (cache.last_error or ""):
            assert time.monotonic() < deadline, cache.status()
            await asyncio.sleep(0.05)
        assert cache._task is not None and not cache._task.done()  # still polling
        await cache.close()

    asyncio.run(scenario())


def test_close_while_the_first_load_is_pending_does_not_hang(tmp_path: Path) -> None:
    release = threading.Event()

    def stuck_store() -> SqlRecordStore:
        release.wait(30)
        raise ConnectionError("late")

    async def scenario() -> None:
        cache = ReleaseCache(stuck_store, poll_seconds=3600)
        await cache.start(wait_seconds=0.1)
        started = time.monotonic()
        await cache.close()
        assert time.monotonic() - started < 5
        release.set()

    asyncio.run(scenario())
