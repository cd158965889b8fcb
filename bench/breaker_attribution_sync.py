"""What per-tenant attribution costs the shared breakers' sync: one busy script call, old vs new, side by side.

Against the Redis on 127.0.0.1:6379 (scratch key prefixes, deleted afterwards). Each breaker gets 10
outcomes per sync (one failure), from ``--tenants`` tenants round robin (the old script gets none: it
has no tenants); rounds alternate old and new. The old ``shared_breaker.py``/``breaker.py`` are loaded
from git (``--base``).

    nice -n 10 .venv/bin/python bench/breaker_attribution_sync.py [--rounds 5] [--syncs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import redis

from breaker_attribution import load_old  # bench/ is the script's directory: on sys.path
from opsgate.domain.reliability_config import BreakerConfig
from opsgate.routing import shared_breaker as new

URL = "redis://127.0.0.1:6379/0"


async def measure(module: Any, prefix: str, breakers: int, tenants: int, syncs: int, old: bool) -> float:
    """Median milliseconds of one busy sync."""
    config = BreakerConfig(shared=URL, key_prefix=prefix, consecutive_failures=10**6, min_requests=10**6)
    shared = [module.SharedCircuitBreaker(config, f"bench#{i}") for i in range(breakers)]
    sync = module.BreakerSync(URL, prefix, shared, interval=60)
    await sync.connect()
    times: list[float] = []
    for _ in range(syncs):
        for breaker in shared:
            for j in range(10):
                if old:
                    breaker.record(j != 3)
                else:
                    breaker.record(j != 3, f"tenant-{j % tenants}" if tenants else None)
        started = time.perf_counter()
        await sync.sync_once()
        times.append((time.perf_counter() - started) * 1000)
    await sync.close()
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--syncs", type=int, default=100)
    parser.add_argument("--base", default="4b5d569~1")
    args = parser.parse_args()
    load_old(args.base, "breaker")
    old_module = load_old(args.base, "shared_breaker")
    client = redis.Redis.from_url(URL)
    for breakers, tenants in ((1, 0), (8, 0), (8, 5), (64, 5)):
        old: list[float] = []
        fresh: list[float] = []
        for _ in range(args.rounds):
            prefix = f"opsgate-bench-attr:{uuid.uuid4().hex[:8]}:"
            old.append(await measure(old_module, prefix + "o:", breakers, tenants, args.syncs, True))
            fresh.append(await measure(new, prefix + "n:", breakers, tenants, args.syncs, False))
            for key in client.scan_iter(prefix + "*"):
                client.delete(key)
        print(
            f"{breakers:3d} breakers, {tenants} tenants a report: old {statistics.median(old):.3f} ms"
            f"  new {statistics.median(fresh):.3f} ms per busy sync"
        )


if __name__ == "__main__":
    asyncio.run(main())
