"""Redis specifics: key layout and expiry, and what happens when Redis goes away and comes back."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis

from opsgate.domain.reliability_config import LimitRule
from opsgate.limits import (
    CountersUnavailable,
    Demand,
    Identity,
    Limiter,
    LimitsUnavailableError,
    RedisCounters,
)
from opsgate.limits.redis_counters import MARKER_KEY, safe_url
from tests.limits.support import REDIS_URL, TcpProxy, redis_keys
from tests.support import free_port

ALICE = Identity(key="k1", user="alice", model="gpt")
RULE = LimitRule(per="user", requests_per_minute=100, tokens_per_minute=10_000, concurrent=5, spend_per_day=10)


async def test_keys_live_under_the_prefix_and_expire(redis_prefix: str) -> None:
    store = RedisCounters(REDIS_URL, redis_prefix)
    await store.start()
    limits = Limiter([RULE], store)
    reservation = await limits.reserve(ALICE, Demand(100, 0.5))
    assert reservation is not None
    keys = redis_keys(redis_prefix)
    assert keys.pop(redis_prefix + MARKER_KEY) == -1  # the one key without expiry: it shows counters were lost
    assert {key.removeprefix(redis_prefix).split(":")[0] for key in keys} == {"rpm", "tpm", "conc", "day"}
    assert all(ttl > 0 for ttl in keys.values()), keys  # nothing lives forever
    day_key = next(key for key in keys if ":day:" in key)
    assert 86400 * 2 < keys[day_key] <= 86400 * 3 + 1
    # A counter that expired before its request settled is not brought back by the settle.
    tpm_key = next(key for key in keys if ":tpm:" in key)
    redis.Redis.from_url(REDIS_URL).delete(tpm_key)
    limits.settle(reservation, tokens=40, cost=0.1)
    await limits.flush()
    assert tpm_key not in redis_keys(redis_prefix)
    conc_key = next(key for key in keys if ":conc:" in key)
    assert await store.read(conc_key.removeprefix(redis_prefix), time.time()) == 0  # the slot was released
    await store.close()


async def test_unreachable_at_start_fails_open_or_closed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="opsgate.limits")
    url = f"redis://:sekrit@127.0.0.1:{free_port()}/0"
    for policy in ("open", "closed"):
        store = RedisCounters(url, "never-written:", probe_interval=0.1)
        await store.start()  # does not raise: the gateway serves per its policy
        limits = Limiter([RULE], store, on_store_error=policy)  # type: ignore[arg-type]
        for _ in range(3):
            started = time.perf_counter()
            if policy == "open":
                reservation = await limits.reserve(ALICE, Demand(1, 0.1))
                assert reservation is not None and not reservation.counted and reservation.headers() == {}
                limits.settle(reservation, tokens=1, cost=0.1)  # nothing to settle, no error
            else:
                with pytest.raises(LimitsUnavailableError) as caught:
                    await limits.reserve(ALICE, Demand(1, 0.1))
                assert caught.value.status == 503 and caught.value.code == "limits_unavailable"
                assert (
                    "Redis is unreachable" in caught.value.message
                    and "on_redis_error is closed" in caught.value.message
                )
            assert time.perf_counter() - started < 0.3  # fails fast, not after retries with backoff
            await asyncio.sleep(0.15)  # past the probe interval: each loop probes again
        status = limits.status()
        assert status["healthy"] is False and status["outages"] == 1 and status["errors"] >= 3
        assert status["passed_uncounted" if policy == "open" else "refused_unavailable"] == 3
        assert "sekrit" not in str(status) and status["url"] == safe_url(url)
        await store.close()
    errors = [r for r in caplog.records if r.name == "opsgate.limits" and "unreachable" in r.getMessage()]
    assert len(errors) == 2, "one log line per outage (one outage per policy here)"
    assert "sekrit" not in caplog.text


async def test_outage_and_recovery(redis_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="opsgate.limits")
    proxy = TcpProxy(6379).start()
    store = RedisCounters(f"redis://127.0.0.1:{proxy.port}/0", redis_prefix, probe_interval=0.2)
    await store.start()
    limits = Limiter([RULE], store, on_store_error="open")
    try:
        held = await limits.reserve(ALICE, Demand(10, 0.1))
        assert held is not None and held.counted
        proxy.cut()
        await asyncio.sleep(0.05)
        for _ in range(5):
            reservation = await limits.reserve(ALICE, Demand(10, 0.1))
            assert reservation is not None and not reservation.counted
        limits.settle(held, tokens=5, cost=0.05)  # lost: counted, and its lease lapses on its own
        await limits.flush()
        assert limits.status()["settle_failures"] == 1 and not store.healthy
        with pytest.raises(CountersUnavailable):  # between probes: answered without touching the network
            await store.reserve([], time.time())
        proxy.restore()
        await asyncio.sleep(0.25)
        reservation = await limits.reserve(ALICE, Demand(10, 0.1))
        assert reservation is not None and reservation.counted
        status = limits.status()
        assert status["healthy"] is True and status["outages"] == 1 and status["passed_uncounted"] == 5
    finally:
        await store.close()
        proxy.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "opsgate.limits"]
    assert len([line for line in lines if "unreachable" in line]) == 1, lines
    assert len([line for line in lines if "reachable again" in line]) == 1, lines


def counter_keys(prefix: str) -> list[str]:
    """The counters under ``prefix`` (without it), not the marker."""
    return [key.removeprefix(prefix) for key in redis_keys(prefix) if key != prefix + MARKER_KEY]


def test_safe_url_drops_the_password() -> None:
    assert safe_url("redis://user:pw@cache.internal:6380/2") == "redis://cache.internal:6380/2"
    assert safe_url("rediss://cache") == "rediss://cache"


async def test_calls_are_shared_under_load_and_a_cancelled_reservation_is_given_back(redis_prefix: str) -> None:
    store = RedisCounters(REDIS_URL, redis_prefix)
    await store.start()
    roomy = RULE.model_copy(update={"concurrent": 100})
    limits = Limiter([roomy], store)
    try:
        held = await asyncio.gather(*(limits.reserve(ALICE, Demand(10, 0.01)) for _ in range(50)))
        status = store.status()
        assert status["operations_per_call"] > 5, status  # fifty reservations, a few round trips
        for reservation in held:
            assert reservation is not None
            limits.settle(reservation, tokens=10, cost=0.01)
        await limits.flush()
        before = {key: await store.read(key, time.time()) for key in counter_keys(redis_prefix)}
        waiting = asyncio.ensure_future(limits.reserve(ALICE, Demand(10, 0.01)))
        await asyncio.sleep(0)  # queued and on its way to Redis
        waiting.cancel()
        await asyncio.sleep(0.1)  # the reply arrives for nobody: the store takes the reservation back
        after = {key: await store.read(key, time.time()) for key in counter_keys(redis_prefix)}
        assert after == pytest.approx(before)
        assert store.status()["calls"] >= 2
    finally:
        await store.close()
