"""Breakers shared through the real Redis: two replicas (two syncs, two connections) in one loop.

Each replica's ``BreakerSync`` is driven by hand (``connect`` + ``sync_once``) so the order of
events is exact; ``test_shared_breaker_gateways.py`` runs the same through two real gateways.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis
import yaml

from opsgate.domain.reliability_config import BreakerConfig
from opsgate.routing.breaker import CircuitBreaker
from opsgate.routing.shared_breaker import BreakerSync, SharedBreakers, SharedCircuitBreaker, make_breaker
from tests.limits.support import REDIS_URL, TcpProxy, scratch_prefix


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; only its keys are deleted afterwards."""
    with scratch_prefix() as prefix:
        yield prefix


def config(prefix: str, url: str = REDIS_URL, **extra: object) -> BreakerConfig:
    values: dict[str, object] = {
        "consecutive_failures": 3,
        "open_seconds": 0.3,
        "shared": url,
        "key_prefix": prefix,
        "sync_interval_seconds": 5,  # the background loop is not started here; syncs are explicit
        **extra,
    }
    return BreakerConfig.model_validate(values)


@asynccontextmanager
async def replica(cfg: BreakerConfig, key: str = "svc#0") -> AsyncIterator[tuple[SharedCircuitBreaker, BreakerSync]]:
    """One replica's breaker for ``key`` and its sync, connected."""
    breaker = SharedCircuitBreaker(cfg, key)
    assert cfg.shared is not None
    sync = BreakerSync(cfg.shared, cfg.key_prefix, [breaker], interval=cfg.sync_interval_seconds)
    await sync.connect()
    try:
        yield breaker, sync
    finally:
        await sync.close()


async def test_a_replica_that_saw_no_failure_opens_with_the_one_that_did(redis_prefix: str) -> None:
    cfg = config(redis_prefix)
    async with replica(cfg) as (a, sync_a), replica(cfg) as (b, sync_b):
        assert a.state == b.state == "closed" and a.status()["scope"] == "shared"
        for _ in range(3):
            assert a.allow()
            a.record(False)
        assert a.state == "closed"  # not yet reported: the request path never waits for Redis
        await sync_a.sync_once()
        assert a.state == "open" and not a.allow()
        assert b.state == "closed"  # B has not synced since
        await sync_b.sync_once()
        assert b.state == "open" and not b.allow()
        status = b.status()
        assert status["reason"] == "3 consecutive failures" and status["opened"] == 1
        assert b.local.state == "closed"  # B's own breaker saw nothing: the decision came from A


async def test_half_open_probes_are_limited_across_replicas_and_close_both(redis_prefix: str) -> None:
    cfg = config(redis_prefix, consecutive_failures=1)
    async with replica(cfg) as (a, sync_a), replica(cfg) as (b, sync_b):
        a.allow()
        a.record(False)
        await sync_a.sync_once()
        await sync_b.sync_once()
        await asyncio.sleep(0.35)  # open_seconds pass
        assert a.state == b.state == "half_open"
        # Both want to probe; the first call on each goes elsewhere while it asks Redis for a lease.
        assert not a.allow() and not b.allow()
        await sync_a.sync_once()
        await sync_b.sync_once()
        assert a.allow()  # A holds the only lease (half_open_probes = 1)
        assert not b.allow()
        sync_b._wake.clear()  # as B's sync loop does when it wakes
        await sync_b.sync_once()
        assert not b.allow(), "B must not get a second probe while A's is out"
        assert not sync_b._wake.is_set()  # refused: B asks again at its next tick, not once per call
        a.record(True)
        await sync_a.sync_once()
        assert a.state == "closed"
        await sync_b.sync_once()
        assert b.state == "closed" and b.allow()


async def test_a_failed_probe_reopens_for_everyone(redis_prefix: str) -> None:
    cfg = config(redis_prefix, consecutive_failures=1)
    async with replica(cfg) as (a, sync_a), replica(cfg) as (b, sync_b):
        a.allow()
        a.record(False)
        await sync_a.sync_once()
        await sync_b.sync_once()
        await asyncio.sleep(0.35)
        assert not b.allow()
        await sync_b.sync_once()
        assert b.allow()  # B probes
        b.record(False)
        assert b.state == "open"  # at once, before any sync
        await sync_b.sync_once()
        await sync_a.sync_once()
        assert a.state == "open" and a.status()["reason"] == "a half-open probe failed"
        assert a.status()["opened"] == 2  # A saw both openings: its own and the re-opening by B's probe


async def test_a_probe_that_ends_without_a_verdict_gives_its_lease_back(redis_prefix: str) -> None:
    cfg = config(redis_prefix, consecutive_failures=1)
    async with replica(cfg) as (a, sync_a), replica(cfg) as (b, sync_b):
        a.allow()
        a.record(False)
        await sync_a.sync_once()
        await sync_b.sync_once()
        await asyncio.sleep(0.35)
        assert not a.allow()
        await sync_a.sync_once()
        assert a.allow()
        a.release()  # load shed or client gone: no verdict
        await sync_a.sync_once()
        assert not b.allow()
        await sync_b.sync_once()
        assert b.allow(), "the lease A gave back is free for B"


async def test_error_rate_over_the_window_counts_every_replica(redis_prefix: str) -> None:
    cfg = config(redis_prefix, consecutive_failures=100, error_rate=0.5, min_requests=8)
    async with replica(cfg) as (a, sync_a), replica(cfg) as (b, sync_b):
        for ok in (True, False, True, False):  # 2 of 4 failed on each replica: neither alone has 8 calls
            a.record(ok)
            b.record(ok)
        await sync_a.sync_once()
        assert a.state == "closed" and a.status()["window_calls"] == 4
        await sync_b.sync_once()
        assert b.state == "open" and b.status()["reason"] == "4 of 8 calls failed in 30s"
        await sync_a.sync_once()
        assert a.state == "open"


async def test_redis_down_falls_back_to_the_local_breaker_visibly_and_comes_back(redis_prefix: str) -> None:
    proxy = TcpProxy(6379).start()
    try:
        cfg = config(redis_prefix, url=f"redis://127.0.0.1:{proxy.port}/0")
        async with replica(cfg) as (a, sync_a):
            a.record(False)
            await sync_a.sync_once()
            assert a.status()["scope"] == "shared"
            proxy.cut()
            await sync_a.sync_once()
            status = a.status()
            assert status["scope"] == "local_fallback"
            assert status["shared"]["healthy"] is False and status["shared"]["last_error"]
            assert status["shared"]["outages"] == 1
            # The local breaker was fed all along: one more failure makes its three in a row.
            a.record(False)
            a.record(False)
            assert a.state == "open" and not a.allow()
            assert a.status()["opened"] == 1
            await sync_a.sync_once()  # the background loop keeps trying: each failed try drops what it carried
            assert a.status()["shared"]["errors"] == 2 and a.status()["shared"]["outages"] == 1
            proxy.restore()
            await sync_a.sync_once()
            assert a.status()["scope"] == "shared"
            assert a.state == "closed"  # the shared breaker never saw the outage's failures
            assert a.status()["shared"]["outages"] == 1
    finally:
        proxy.stop()


async def test_redis_unreachable_at_start_is_an_outage_not_a_crash(redis_prefix: str) -> None:
    proxy = TcpProxy(6379).start()
    proxy.cut()
    try:
        cfg = config(redis_prefix, url=f"redis://127.0.0.1:{proxy.port}/0")
        async with replica(cfg) as (a, _):
            assert a.status()["scope"] == "local_fallback" and a.allow()
    finally:
        proxy.stop()


async def test_the_background_sync_spreads_an_opening_within_the_staleness_bound(redis_prefix: str) -> None:
    cfg = config(redis_prefix, sync_interval_seconds=0.05)
    a, b = SharedCircuitBreaker(cfg, "svc#0"), SharedCircuitBreaker(cfg, "svc#0")
    groups = [SharedBreakers([a]), SharedBreakers([b])]
    for group in groups:
        await group.start()
    try:
        for _ in range(3):
            a.record(False)  # the third wakes A's sync at once
        loop = asyncio.get_running_loop()
        started = loop.time()
        while b.state != "open":
            assert loop.time() - started < 1.0, "B never saw the opening"
            await asyncio.sleep(0.005)
        assert loop.time() - started <= 2 * 0.05 + 0.1  # twice the interval, plus round trips
    finally:
        for group in groups:
            await group.close()
    keys = redis.Redis.from_url(REDIS_URL).ttl(redis_prefix + "svc#0")
    assert 0 < keys <= 86_400  # a deployment removed from config leaves nothing behind for long


def test_config_chooses_the_breaker() -> None:
    assert isinstance(make_breaker(BreakerConfig(), "x"), CircuitBreaker)
    assert isinstance(make_breaker(BreakerConfig(shared=REDIS_URL), "x"), SharedCircuitBreaker)
    assert isinstance(make_breaker(BreakerConfig(shared=REDIS_URL, enabled=False), "x"), CircuitBreaker)


def test_the_readme_snippet_is_a_valid_shared_breaker() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    found = re.search(r"`breaker: (\{shared: [^`]*\})`", readme)
    assert found is not None
    parsed = BreakerConfig.model_validate(yaml.safe_load(found.group(1)))
    assert parsed.shared is not None and parsed.shared.startswith("redis://")
