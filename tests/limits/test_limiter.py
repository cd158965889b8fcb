"""Reserve-then-settle, run identically on the in-process counters and on Redis (a real server)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from opsgate.domain.reliability_config import LimitRule
from opsgate.limits import Demand, Identity, Limiter, MemoryCounters, RateLimitError, RedisCounters
from opsgate.limits.limiter import CounterStore
from tests.limits.support import REDIS_URL, Clock

ALICE = Identity(key="k1", user="alice", model="gpt")
BOB = Identity(key="k2", user="bob", model="gpt")
START = dt.datetime(2025, 6, 15, 12, 0, 10, tzinfo=dt.UTC).timestamp()  # ten seconds into a minute, at midday


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[CounterStore]:
    counters: CounterStore = MemoryCounters() if request.param == "memory" else RedisCounters(REDIS_URL, redis_prefix)
    await counters.start()
    yield counters
    await counters.close()


def limiter(store: CounterStore, *rules: LimitRule, clock: Clock | None = None) -> Limiter:
    return Limiter(rules, store, clock=clock or Clock(START))


async def refused(limiter: Limiter, who: Identity, demand: Demand) -> RateLimitError:
    with pytest.raises(RateLimitError) as caught:
        await limiter.reserve(who, demand)
    return caught.value


async def test_requests_per_minute_slides(store: CounterStore) -> None:
    clock = Clock(START)
    limits = limiter(store, LimitRule(per="user", requests_per_minute=3), clock=clock)
    for expected_remaining in ("2", "1", "0"):
        reservation = await limits.reserve(ALICE, Demand(10, None))
        assert reservation is not None
        assert reservation.headers()["x-ratelimit-remaining-requests"] == expected_remaining
    error = await refused(limits, ALICE, Demand(10, None))
    # 3 used in this minute: it must become the previous minute and a third of it slide out: 50s + 20s.
    assert error.message == "requests_per_minute for user alice: 3 of 3 used; retry in 1m10s"
    assert error.headers["Retry-After"] == "70" and error.code == "rate_limit_exceeded" and error.status == 429
    assert await limits.reserve(BOB, Demand(10, None)) is not None  # counted per user
    clock.advance(69)
    await refused(limits, ALICE, Demand(10, None))
    clock.advance(1.01)
    assert await limits.reserve(ALICE, Demand(10, None)) is not None


async def test_tokens_settle_to_actual_usage(store: CounterStore) -> None:
    limits = limiter(store, LimitRule(per="user", tokens_per_minute=100))
    first = await limits.reserve(ALICE, Demand(60, None))
    assert first is not None
    error = await refused(limits, ALICE, Demand(60, None))
    assert error.message.startswith("tokens_per_minute for user alice: 60 of 100 used, this request needs ~60; retry")
    limits.settle(first, tokens=12, cost=None)  # it used 12: the other 48 come back
    second = await limits.reserve(ALICE, Demand(60, None))
    assert second is not None and second.headers()["x-ratelimit-remaining-tokens"] == "28"
    limits.settle(second, tokens=12, cost=None)
    limits.settle(second, tokens=0, cost=None)  # a second settle does nothing
    third = await limits.reserve(ALICE, Demand(60, None))
    assert third is not None and third.headers()["x-ratelimit-remaining-tokens"] == "16"


async def test_a_request_larger_than_the_limit_is_refused_without_retry_after(store: CounterStore) -> None:
    limits = limiter(store, LimitRule(per="user", tokens_per_minute=100))
    error = await refused(limits, ALICE, Demand(150, None))
    assert "this request alone needs ~150, over the limit of 100; lower max_tokens" in error.message
    assert "Retry-After" not in error.headers


async def test_all_rules_reserve_or_none_does(store: CounterStore) -> None:
    limits = limiter(
        store, LimitRule(per="global", requests_per_minute=100), LimitRule(per="user", requests_per_minute=1)
    )
    assert await limits.reserve(ALICE, Demand(1, None)) is not None
    error = await refused(limits, ALICE, Demand(1, None))
    assert error.message.startswith("requests_per_minute for user alice: 1 of 1 used")
    # The refused request did not count against the global rule either.
    reservation = await limits.reserve(BOB, Demand(1, None))
    assert reservation is not None and reservation.headers()["x-ratelimit-remaining-requests"] == "0"  # bob: 1-1
    assert reservation.tallies[0].used == 1  # global: only alice's admitted request before bob's


async def test_concurrent_slots_are_released_and_lapse(store: CounterStore) -> None:
    clock = Clock(START)
    limits = Limiter([LimitRule(per="user", concurrent=2)], store, clock=clock, lease_seconds=30)
    first = await limits.reserve(ALICE, Demand(1, None))
    second = await limits.reserve(ALICE, Demand(1, None))
    assert first is not None and second is not None
    error = await refused(limits, ALICE, Demand(1, None))
    assert error.message == "concurrent for user alice: 2 of 2 requests in flight; retry in 1s"
    limits.settle(first, tokens=None, cost=None)
    assert await limits.reserve(ALICE, Demand(1, None)) is not None
    await refused(limits, ALICE, Demand(1, None))
    clock.advance(31)  # a replica died holding both: their leases lapse
    assert await limits.reserve(ALICE, Demand(1, None)) is not None


async def test_spend_per_day_and_month(store: CounterStore) -> None:
    clock = Clock(START)
    limits = limiter(store, LimitRule(per="key", spend_per_day=1.0, spend_per_month=1.2), clock=clock)
    held = [await limits.reserve(ALICE, Demand(10, 0.4)) for _ in range(2)]
    error = await refused(limits, ALICE, Demand(10, 0.4))
    assert error.code == "budget_exceeded"
    assert error.message.startswith("spend_per_day for key k1: 0.8 of 1 used, this request needs ~0.4; retry in ")
    assert int(error.headers["Retry-After"]) == 12 * 3600 - 10  # until UTC midnight
    for reservation in held:
        assert reservation is not None
        limits.settle(reservation, tokens=None, cost=0.1)  # cheaper than estimated
    assert await limits.reserve(ALICE, Demand(10, 0.4)) is not None  # day: 0.6 of 1
    clock.advance(86400)  # next day: the day budget is fresh, the month has 0.6 spent
    assert await limits.reserve(ALICE, Demand(10, 0.3)) is not None
    assert await limits.reserve(ALICE, Demand(10, 0.3)) is not None
    error = await refused(limits, ALICE, Demand(10, 0.3))
    assert error.message.startswith("spend_per_month for key k1: 1.2 of 1.2 used, this request needs ~0.3")
    assert int(error.headers["Retry-After"]) == 14 * 86400 + 12 * 3600 - 10  # from 16 June midday to 1 July


async def test_parallel_reservations_never_overshoot(store: CounterStore) -> None:
    limits = limiter(store, LimitRule(per="user", tokens_per_minute=1000))

    async def one() -> bool:
        try:
            return await limits.reserve(ALICE, Demand(30, None)) is not None
        except RateLimitError:
            return False

    results = await asyncio.gather(*(one() for _ in range(100)))
    assert sum(results) == 1000 // 30


async def test_no_matching_rule_reserves_nothing(store: CounterStore) -> None:
    limits = limiter(store, LimitRule(per="user", model="other", requests_per_minute=1))
    assert await limits.reserve(ALICE, Demand(1, 1.0)) is None
    assert limits.status()["admitted"] == 0


def test_reset_header_text() -> None:
    from opsgate.limits.limiter import reset_text

    assert [reset_text(s) for s in (0.017, 0.9996, 1.0, 59.2, 60.0, 360.0, 3725.0)] == [
        "17ms",
        "1s",
        "1s",
        "1m0s",
        "1m0s",
        "6m0s",
        "62m5s",
    ]
