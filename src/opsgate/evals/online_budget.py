"""The online-evaluation sampling budget, shared fairly between tenants.

One token bucket for all let one tenant's flood take the whole budget (a probe: tenant B got 3 of 28
requests sampled while A flooded), so B's quality SLI had too few samples to measure. Here each
tenant (the operator's tenant-less traffic is one more) has its own bucket at ``rate / n`` a second,
``n`` being the tenants that reached the budget in the last ``ACTIVE_SECONDS``; a global bucket at
``rate`` stays the outer cap. A tenant alone gets the whole rate; two get half each, whatever either
sends. At most ``MAX_TENANTS`` are tracked (the least recently seen is forgotten first), so memory is
bounded whatever tenant names arrive.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

ACTIVE_SECONDS = 60.0
MAX_TENANTS = 1024


@dataclass
class Bucket:
    """A token bucket: ``rate`` admissions a second, bursts up to one second's worth (at least one)."""

    rate: float
    tokens: float
    last: float

    def refill(self, now: float, rate: float | None = None) -> bool:
        """Add the tokens earned since the last call; ``rate`` (if given) applies from now on. Whether a
        token is there."""
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if rate is not None:
            self.rate = rate
        return self.tokens >= 1.0


class FairBudget:
    """``take(tenant, now)``: whether a sample of ``tenant`` fits its fair share of ``rate``."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self._total = Bucket(rate, rate, now)
        self._tenants: OrderedDict[str | None, tuple[float, Bucket]] = OrderedDict()  # least recently seen first

    @property
    def active(self) -> int:
        """Tenants sharing the budget now."""
        return len(self._tenants)

    def take(self, tenant: str | None, now: float) -> bool:
        """Admit one sample of ``tenant`` or not (never blocks)."""
        while self._tenants:  # forget tenants idle for ACTIVE_SECONDS (the oldest are first)
            oldest, (seen, _) = next(iter(self._tenants.items()))
            if seen >= now - ACTIVE_SECONDS:
                break
            del self._tenants[oldest]
        entry = self._tenants.pop(tenant, None)
        if entry is None and len(self._tenants) >= MAX_TENANTS:
            self._tenants.popitem(last=False)
        share = self.rate / (len(self._tenants) + 1)
        bucket = entry[1] if entry is not None else Bucket(share, max(1.0, share), now)  # a second's burst
        self._tenants[tenant] = (now, bucket)
        # Both or neither: a sample the global cap refuses does not cost the tenant its share.
        has_own = bucket.refill(now, share)
        has_total = self._total.refill(now)
        if not (has_own and has_total):
            return False
        bucket.tokens -= 1.0
        self._total.tokens -= 1.0
        return True
