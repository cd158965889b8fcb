"""Counters lost in Redis are noticed, by every replica (probe-g G2).

Budgets and rate counters live only in Redis: a restart without persistence, a flush or a failover to
an empty replica resets them. Before, nothing said so (a key spent 0.088 of a 0.05 daily budget).
Now a marker key without expiry stands beside the counters; every script call reads it, so each
replica sees it replaced, logs an error once and counts it in its status (``/readyz``, metrics).
A Redis that evicts keys when full is named at start.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

from opsgate.domain.reliability_config import LimitRule
from opsgate.limits import Demand, Identity, Limiter, RedisCounters
from opsgate.limits.redis_counters import MARKER_KEY
from opsgate.server.readiness import public_readiness
from tests.limits.support import REDIS_URL, redis_keys
from tests.support import free_port

ALICE = Identity(key="k1", user="alice", model="gpt")
RULE = LimitRule(per="user", requests_per_minute=100, spend_per_day=10)
DEADLINE = 30.0  # generous: a loaded machine


def lost_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "opsgate.limits" and "were lost" in r.getMessage()]


async def reserve(limits: Limiter) -> None:
    reservation = await limits.reserve(ALICE, Demand(10, 0.1))
    assert reservation is not None and reservation.counted
    limits.settle(reservation, tokens=10, cost=0.1)
    await limits.flush()


async def test_every_replica_notices_the_counters_were_lost(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opsgate.limits")
    replicas = [Limiter([RULE], RedisCounters(REDIS_URL, redis_prefix)) for _ in range(2)]
    for limits in replicas:
        await limits.start()
    try:
        for limits in replicas:
            await reserve(limits)  # the first call writes the marker: a fresh start, not a loss
        assert redis_keys(redis_prefix)[redis_prefix + MARKER_KEY] == -1  # no expiry
        since = replicas[0].status()["counting_since"]
        assert since is not None and replicas[1].status()["counting_since"] == since
        assert all(limits.status()["counters_lost"] == 0 for limits in replicas) and not lost_lines(caplog)
        assert public_readiness({"limits": replicas[0].status()})["components"] == {"limits": "healthy"}

        client = redis.Redis.from_url(REDIS_URL)
        client.delete(*redis_keys(redis_prefix))  # what a restart without persistence does to them
        client.close()
        for limits in replicas:
            await reserve(limits)
            await reserve(limits)  # noticed once, not per call
        for limits in replicas:
            status = limits.status()
            assert status["counters_lost"] == 1 and status["counters_lost_at"] is not None, status
            assert status["counting_since"] > since and status["healthy"] is True
            # /readyz without a key shows it: still serving, but the limits restarted from zero
            assert public_readiness({"limits": status})["components"] == {"limits": "degraded"}
        assert len(lost_lines(caplog)) == 2, lost_lines(caplog)  # one line per replica
        assert "docs/deploy.md" in lost_lines(caplog)[0]

        late = Limiter([RULE], RedisCounters(REDIS_URL, redis_prefix))  # started after: nothing to report
        await late.start()
        await reserve(late)
        assert late.status()["counters_lost"] == 0
        await late.close()
    finally:
        for limits in replicas:
            await limits.close()


class OwnRedis:
    """A redis-server of this test's own on a free port, without persistence."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.args = ["--save", "", "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="opsgate-redis-"), *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OwnRedis:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", *self.args]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                with redis.Redis(port=self.port) as client:
                    client.ping()
                return self
            except redis.ConnectionError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(DEADLINE)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture()
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis().start()
    yield server
    server.stop()


async def test_a_redis_restart_without_persistence_is_noticed(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opsgate.limits")
    limits = Limiter([RULE], RedisCounters(own_redis.url, "opsgate:limits:"), on_store_error="closed")
    await limits.start()
    try:
        await reserve(limits)
        own_redis.stop()
        own_redis.start()
        await reserve(limits)  # on a new connection (G1), into counters that start from zero
        status = limits.status()
        assert status["counters_lost"] == 1 and status["outages"] == 0, status
        assert len(lost_lines(caplog)) == 1
    finally:
        await limits.close()


async def test_a_redis_that_evicts_is_named_at_start(own_redis: OwnRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="opsgate.limits")
    server = OwnRedis("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru").start()
    try:
        store = RedisCounters(server.url, "opsgate:limits:")
        await store.start()
        assert store.status()["eviction_policy"] == "allkeys-lru" and store.status()["state"] == "degraded"
        await store.close()
    finally:
        server.stop()
    warnings = [r.getMessage() for r in caplog.records if "evicts keys" in r.getMessage()]
    assert len(warnings) == 1 and "noeviction" in warnings[0]
    store = RedisCounters(own_redis.url, "opsgate:limits:")  # no maxmemory: it never evicts
    await store.start()
    assert store.status()["eviction_policy"] is None and store.status()["state"] == "ok"
    await store.close()
