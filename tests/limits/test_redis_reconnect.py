"""A connection to a healthy Redis that was closed under the limiter is not an outage (probe-g G1).

A Redis restart or failover, Redis's own idle ``timeout``, a NAT or a load balancer close the
limiter's one connection while Redis keeps serving. Before the fix the next call failed on the dead
connection and started a ``probe_interval`` outage: about a second of 503s (``on_redis_error:
closed``) or of uncounted admissions (``open``) on every replica.
"""

from __future__ import annotations

import pytest

from opsgate.domain.reliability_config import LimitRule
from opsgate.limits import Demand, Identity, Limiter, RedisCounters
from tests.limits.support import TcpProxy

ALICE = Identity(key="k1", user="alice", model="gpt")
RULE = LimitRule(per="user", requests_per_minute=100, concurrent=5, spend_per_day=10)


@pytest.mark.parametrize("policy", ["closed", "open"])
async def test_a_dropped_connection_is_retried_on_a_new_one(redis_prefix: str, policy: str) -> None:
    proxy = TcpProxy(6379).start()
    store = RedisCounters(f"redis://127.0.0.1:{proxy.port}/0", redis_prefix, probe_interval=30)
    limits = Limiter([RULE], store, on_store_error=policy)  # type: ignore[arg-type]
    await limits.start()
    try:
        first = await limits.reserve(ALICE, Demand(10, 0.1))
        assert first is not None and first.counted
        for _ in range(3):  # each time the connection is closed under it, Redis itself up
            proxy.drop()
            reservation = await limits.reserve(ALICE, Demand(10, 0.1))  # closed: no 503; open: counted
            assert reservation is not None and reservation.counted
            limits.settle(reservation, tokens=10, cost=0.1)
            await limits.flush()
        status = limits.status()
        assert status["healthy"] is True and status["outages"] == 0, status
        assert status["passed_uncounted"] == 0 and status["refused_unavailable"] == 0
        assert status["settle_failures"] == 0
    finally:
        await limits.close()
        proxy.stop()
