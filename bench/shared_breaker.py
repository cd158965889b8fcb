"""What sharing circuit breakers through Redis costs, and how stale a replica's view gets.

Three measurements, in one process, against the Redis on 127.0.0.1:6379 (scratch key prefix, deleted
afterwards); about 15 s with the defaults:
  1. request path: ``allow()`` + ``record(True)`` per call, per-process breaker vs shared breaker
     (the shared one only bumps local counters; no Redis call);
  2. one sync (the single script call a replica makes every ``sync_interval_seconds``) for 1, 8
     and 64 shared breakers, idle (nothing to report: only reads) and busy (outcomes to report for
     every breaker): median and p99 milliseconds;
  3. propagation: two replicas (two connections, background syncs at the default 0.25 s interval);
     the time from replica A's opening failure to replica B seeing the breaker open, over
     ``--trials`` openings (bound: twice the interval plus round trips).

Run:

    .venv/bin/python bench/shared_breaker.py
    .venv/bin/python bench/shared_breaker.py --calls 200000 --syncs 300 --trials 20

Writes bench/results/shared_breaker.json.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import redis

from _common import machine, median, write_json
from opsgate.domain.reliability_config import BreakerConfig
from opsgate.routing.breaker import Breaker, CircuitBreaker
from opsgate.routing.shared_breaker import BreakerSync, SharedBreakers, SharedCircuitBreaker

REDIS_URL = "redis://127.0.0.1:6379/0"


def per_call_ns(breaker: Breaker, calls: int) -> float:
    """Nanoseconds per allow() + record(True)."""
    allow, record = breaker.allow, breaker.record
    started = time.perf_counter_ns()
    for _ in range(calls):
        allow()
        record(True)
    return (time.perf_counter_ns() - started) / calls


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def request_path(prefix: str, calls: int) -> dict[str, float]:
    config = BreakerConfig(shared=REDIS_URL, key_prefix=prefix)
    shared = SharedCircuitBreaker(config, "bench#0")
    sync = BreakerSync(REDIS_URL, prefix, [shared], interval=60)
    await sync.connect()
    try:
        assert shared.shared_active
        return {
            "process_ns": round(per_call_ns(CircuitBreaker(BreakerConfig()), calls), 1),
            "shared_ns": round(per_call_ns(shared, calls), 1),
        }
    finally:
        await sync.close()


async def sync_cost(prefix: str, breakers: int, syncs: int, busy: bool) -> dict[str, Any]:
    config = BreakerConfig(shared=REDIS_URL, key_prefix=prefix, consecutive_failures=1_000_000)
    group = [SharedCircuitBreaker(config, f"bench#{n}") for n in range(breakers)]
    sync = BreakerSync(REDIS_URL, prefix, group, interval=60)
    await sync.connect()
    times: list[float] = []
    try:
        for _ in range(syncs):
            for breaker in group if busy else ():
                breaker.record(True)
                breaker.record(False)
            started = time.perf_counter()
            await sync.sync_once()
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await sync.close()
    assert sync.errors == 0
    return {
        "breakers": breakers,
        "busy": busy,
        "median_ms": round(median(times), 3),
        "p99_ms": round(percentile(times, 0.99), 3),
    }


async def propagation(prefix: str, trials: int) -> dict[str, Any]:
    delays: list[float] = []
    interval = BreakerConfig().sync_interval_seconds
    for trial in range(trials):
        config = BreakerConfig(shared=REDIS_URL, key_prefix=f"{prefix}{trial}:", consecutive_failures=3)
        a, b = SharedCircuitBreaker(config, "svc#0"), SharedCircuitBreaker(config, "svc#0")
        groups = [SharedBreakers([a]), SharedBreakers([b])]
        for group in groups:
            await group.start()
        await asyncio.sleep(interval * (trial % 4) / 4)  # land at different phases of the two ticks
        try:
            for _ in range(3):
                a.record(False)
            started = time.perf_counter()
            while b.state != "open":  # noqa: ASYNC110 - polls a plain attribute; no event to wait on
                await asyncio.sleep(0.001)
            delays.append((time.perf_counter() - started) * 1000)
        finally:
            for group in groups:
                await group.close()
    return {
        "interval_ms": interval * 1000,
        "median_ms": round(median(delays), 1),
        "max_ms": round(max(delays), 1),
        "bound_ms": 2 * interval * 1000,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"opsgate-bench:{uuid.uuid4().hex[:8]}:"
    try:
        return {
            "machine": machine(),
            "request_path": await request_path(prefix, args.calls),
            "sync": [await sync_cost(prefix, n, args.syncs, busy) for busy in (False, True) for n in (1, 8, 64)],
            "propagation": await propagation(prefix, args.trials),
        }
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--syncs", type=int, default=300)
    parser.add_argument("--trials", type=int, default=20)
    result = asyncio.run(main(parser.parse_args()))
    path = write_json("shared_breaker.json", result)
    for section in ("request_path", "sync", "propagation"):
        print(section, result[section])
    print("written to", path)
