"""A shared breaker's connection closed under it while Redis is up is not an outage (probe-g G1).

Before the fix the next sync failed on the dead connection: an outage logged, the breaker on its
local fallback until the next sync, and what the failed sync carried dropped.
"""

from __future__ import annotations

from tests.limits.support import TcpProxy
from tests.routing.test_shared_breaker import config, redis_prefix, replica  # noqa: F401  (fixture)


async def test_a_dropped_connection_is_retried_on_a_new_one(redis_prefix: str) -> None:  # noqa: F811
    proxy = TcpProxy(6379).start()
    try:
        cfg = config(redis_prefix, url=f"redis://127.0.0.1:{proxy.port}/0")
        async with replica(cfg) as (a, sync_a):
            await sync_a.sync_once()
            for _ in range(3):
                proxy.drop()
                a.record(False)
                await sync_a.sync_once()
                shared = a.status()["shared"]
                assert a.status()["scope"] == "shared" and shared["healthy"] is True, shared
            assert shared["outages"] == 0 and shared["errors"] == 0, shared
    finally:
        proxy.stop()
