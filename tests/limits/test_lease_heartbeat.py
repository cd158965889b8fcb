"""Short leases kept alive by a heartbeat: a long request keeps its slot, a dead one frees it in a minute.

Both stores renew the same way (``renew`` moves the expiry of leases still held, never revives a released
one), driven by ``Limiter.renew_leases`` — here called by hand with a settable clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from opsgate.domain.reliability_config import LimitRule
from opsgate.limits import Demand, Identity, Limiter, MemoryCounters, RateLimitError, RedisCounters
from opsgate.limits.limiter import LEASE_SECONDS, CounterStore
from tests.limits.support import REDIS_URL, Clock

ALICE = Identity(key="k1", user="alice", model="gpt")
START = dt.datetime(2025, 6, 15, 12, 0, 10, tzinfo=dt.UTC).timestamp()
RULE = LimitRule(per="user", concurrent=1)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[CounterStore]:
    counters: CounterStore = MemoryCounters() if request.param == "memory" else RedisCounters(REDIS_URL, redis_prefix)
    await counters.start()
    yield counters
    await counters.close()


async def is_refused(limits: Limiter) -> bool:
    try:
        reservation = await limits.reserve(ALICE, Demand(1, None))
    except RateLimitError:
        return True
    assert reservation is not None
    limits.settle(reservation, tokens=None, cost=None)
    await limits.flush()
    return False


def test_default_lease_is_short() -> None:
    assert LEASE_SECONDS <= 60  # a replica that dies holding slots blocks them for a minute, not 15


async def test_a_long_request_keeps_its_slot_and_a_dead_one_lapses(store: CounterStore) -> None:
    clock = Clock(START)
    limits = Limiter([RULE], store, clock=clock, lease_seconds=60)
    long_request = await limits.reserve(ALICE, Demand(1, None))
    assert long_request is not None
    for _ in range(10):  # 200 s in flight, renewed every 20 s as the heartbeat would
        clock.advance(20)
        limits.renew_leases()
        await limits.flush()
        assert await is_refused(limits), "the running request lost its slot"
    limits.settle(long_request, tokens=None, cost=None)
    limits.renew_leases()  # a heartbeat after the settle must not bring it back
    await limits.flush()
    assert not await is_refused(limits)

    dead = await limits.reserve(ALICE, Demand(1, None))  # its replica dies: no more heartbeats
    assert dead is not None
    clock.advance(61)
    assert not await is_refused(limits)
    assert limits.status()["in_flight"] == 1  # this limiter still thinks it holds it; the store does not


async def test_heartbeat_stops_after_the_longest_hold(store: CounterStore) -> None:
    """A request never settled (a bug) lapses after MAX_HOLD_SECONDS, like the old fixed lease."""
    clock = Clock(START)
    limits = Limiter([RULE], store, clock=clock, lease_seconds=60)
    assert await limits.reserve(ALICE, Demand(1, None)) is not None
    for _ in range(60):  # 1200 s of heartbeats
        clock.advance(20)
        limits.renew_leases()
    await limits.flush()
    assert not await is_refused(limits) and limits.status()["in_flight"] == 0


async def test_start_runs_the_heartbeat_and_close_stops_it() -> None:
    store = MemoryCounters()
    limits = Limiter([RULE], store, lease_seconds=0.3)  # real clock: a heartbeat every 0.1 s
    await limits.start()
    try:
        held = await limits.reserve(ALICE, Demand(1, None))
        assert held is not None
        lease = next(c for c in held.checks if c.kind == "lease")
        deadline = asyncio.get_running_loop().time() + 10
        while store._leases[lease.key].get(lease.member, 0.0) <= lease.expires:
            assert asyncio.get_running_loop().time() < deadline, "the heartbeat never renewed the lease"
            await asyncio.sleep(0.05)
    finally:
        await limits.close()
    assert limits._heartbeat is None
