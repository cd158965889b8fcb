"""A tenant's admin requests: token buckets for reads and for writes, per tenant, in this process.

Every admin write appends rows somewhere (keys, audit entries that can never be deleted, baselines,
datasets), and admin reads run store queries in the worker threads every route shares. A tenant's
script looping on them took ~140 key mints or ~280 baseline PUTs a second and doubled another
tenant's chat latency (outside probe, eleventh session). Operator keys (no tenant) are not limited:
they are the people who run the gateway. Per tenant, not per key: a tenant admin can mint keys, so a
per-key bucket would multiply with them. Per replica, like the login throttle: N replicas allow N
times the rate, which still bounds it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from opsgate.domain.auth_config import AdminRateConfig

_MAX_KEYS = 10_000  # buckets kept (least recently used dropped first: a dropped tenant starts full again)


class _Buckets:
    """Token buckets by key: ``rate`` tokens a second up to ``burst``."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, at)

    def take(self, key: str) -> float | None:
        """Take one token: None when there was one, else the seconds until there will be."""
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = None
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > _MAX_KEYS:
            self._buckets.popitem(last=False)
        return wait


class AdminThrottle:
    """Whether a tenant's admin request may go ahead now; counts refusals for /readyz."""

    def __init__(self, config: AdminRateConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = config.reads_per_second > 0 or config.writes_per_second > 0
        self._reads = _Buckets(config.reads_per_second, config.read_burst, clock) if config.reads_per_second else None
        self._writes = (
            _Buckets(config.writes_per_second, config.write_burst, clock) if config.writes_per_second else None
        )
        self.refused_total = 0

    def retry_after(self, tenant: str, write: bool) -> float | None:
        """None when the request may go ahead (a token is taken), else seconds until it may."""
        buckets = self._writes if write else self._reads
        if buckets is None:
            return None
        wait = buckets.take(tenant)
        if wait is not None:
            self.refused_total += 1
        return wait
