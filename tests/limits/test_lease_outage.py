"""Concurrent slots survive a Redis blip: lost releases are sent again, lost reservations undone.

Probe 10, finding 2: three requests in flight, Redis gone for a fraction of a second, and their slots
stayed held for the whole 900 s lease, so other clients got ``429 … 3 of 3 in flight`` for 15 minutes.
These tests go through a TCP proxy in front of the real Redis; the lease is set to 900 s here, so only
the retried release (not the shorter default lease) can free the slots within the deadlines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis

from opsgate.domain.reliability_config import LimitRule
from opsgate.limits import Demand, Identity, Limiter, LimitsUnavailableError, RedisCounters
from tests.limits.support import REDIS_URL, TcpProxy

RULE = LimitRule(per="model", concurrent=3)  # one pool of slots for every tenant on the model
TENANT_A = [Identity(key=f"a{i}", user=None, model="gpt", tenant="a") for i in range(3)]
TENANT_B = Identity(key="b1", user=None, model="gpt", tenant="b")


async def until(condition: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    """Wait for ``condition`` with a generous deadline (the machine may be loaded)."""
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, f"not within {seconds}s: {what}"
        await asyncio.sleep(0.05)


def live_leases(prefix: str) -> int:
    """Lease members held in the real Redis under ``prefix``, read past the proxy."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(int(client.zcard(key)) for key in client.scan_iter(match=prefix + "*conc*", count=1000))
    finally:
        client.close()


async def test_releases_lost_in_an_outage_are_sent_again(redis_prefix: str) -> None:
    proxy = TcpProxy(6379).start()
    store = RedisCounters(f"redis://127.0.0.1:{proxy.port}/0", redis_prefix, timeout=0.5, probe_interval=0.2)
    limits = Limiter([RULE], store, on_store_error="closed", lease_seconds=900)
    await limits.start()
    try:
        held = [await limits.reserve(who, Demand(10, None)) for who in TENANT_A]
        assert all(r is not None for r in held) and live_leases(redis_prefix) == 3
        proxy.cut()
        for reservation in held:  # the three requests end while Redis is away
            assert reservation is not None
            limits.settle(reservation, tokens=None, cost=None)
        await limits.flush()
        assert not store.healthy and live_leases(redis_prefix) == 3
        proxy.restore()
        returned = time.monotonic()

        # With no request at all, the retry timer frees the slots once Redis answers.
        async def freed() -> bool:
            return live_leases(redis_prefix) == 0

        await until(freed, 10, "the three lost releases reach Redis")
        assert time.monotonic() - returned < 10

        reservation = await limits.reserve(TENANT_B, Demand(10, None))  # another tenant gets a slot
        assert reservation is not None
        assert store.status().get("releases_pending") == 0 and store.status().get("releases_retried", 0) >= 3
    finally:
        await limits.close()
        proxy.stop()


async def test_new_request_after_an_outage_carries_the_releases(redis_prefix: str) -> None:
    """A reservation right after Redis returns goes behind the kept releases, in the same call."""
    proxy = TcpProxy(6379).start()
    # A long probe interval: the timer does not fire before the test's own request.
    store = RedisCounters(f"redis://127.0.0.1:{proxy.port}/0", redis_prefix, timeout=0.5, probe_interval=0.5)
    limits = Limiter([RULE], store, on_store_error="closed", lease_seconds=900)
    await limits.start()
    try:
        held = [await limits.reserve(who, Demand(10, None)) for who in TENANT_A]
        proxy.cut()
        for reservation in held:
            assert reservation is not None
            limits.settle(reservation, tokens=None, cost=None)
        await limits.flush()
        proxy.restore()
        deadline = time.monotonic() + 10
        while True:  # the client retries on 503 (Redis between probes), never a 429 for the lost slots
            try:
                reservation = await limits.reserve(TENANT_B, Demand(10, None))
                break
            except LimitsUnavailableError:
                assert time.monotonic() < deadline, "Redis did not come back"
                await asyncio.sleep(0.05)
        assert reservation is not None
    finally:
        await limits.close()
        proxy.stop()


async def test_reservation_whose_reply_timed_out_is_undone(redis_prefix: str) -> None:
    """Redis slower than the timeout: the reservation runs there, the reply is lost, the slot is freed."""
    proxy = TcpProxy(6379).start()
    store = RedisCounters(f"redis://127.0.0.1:{proxy.port}/0", redis_prefix, timeout=0.3, probe_interval=0.2)
    limits = Limiter([RULE], store, on_store_error="closed", lease_seconds=900)
    await limits.start()
    try:
        await store.flush()
        proxy.delay = 1.0
        with pytest.raises(LimitsUnavailableError):
            await limits.reserve(TENANT_A[0], Demand(10, None))

        async def landed() -> bool:
            return live_leases(redis_prefix) == 1

        # The script still reaches Redis after the client gave up: a slot nobody will release.
        await until(landed, 10, "the timed-out reservation lands in Redis")
        proxy.delay = 0.0

        async def undone() -> bool:
            return live_leases(redis_prefix) == 0 and not store.status().get("releases_pending")

        await until(undone, 10, "the timed-out reservation is released")
        for who in TENANT_A:  # all three slots are free again
            assert await limits.reserve(who, Demand(10, None)) is not None
    finally:
        await limits.close()
        proxy.stop()


async def test_release_of_a_lease_that_is_gone_is_harmless(redis_prefix: str) -> None:
    store = RedisCounters(REDIS_URL, redis_prefix)
    limits = Limiter([RULE], store, lease_seconds=900)
    await limits.start()
    try:
        first = await limits.reserve(TENANT_A[0], Demand(10, None))
        second = await limits.reserve(TENANT_A[1], Demand(10, None))
        assert first is not None and second is not None and first.lease is not None
        key = next(c.key for c in first.checks if c.kind == "lease")
        store._keep_release(key, first.lease)  # a release sent twice (kept, and already applied below)
        store._keep_release(key, "never-reserved")
        limits.settle(first, tokens=None, cost=None)
        await limits.flush()
        await store.reserve([], time.time())  # the kept releases go out with this call
        assert live_leases(redis_prefix) == 1 and store.status()["releases_pending"] == 0
    finally:
        await limits.close()
