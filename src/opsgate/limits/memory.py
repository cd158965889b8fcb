"""Counters in this process: exact and fast, but each process counts on its own.

Reserve and settle never await, so on one event loop each is atomic without a lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opsgate.limits.checks import Adjustment, Admission, Check, Tally, exceeds

_PRUNE_EVERY = 30.0  # seconds between sweeps of expired counters, so memory stays bounded


class MemoryCounters:
    """Counters and leases in dictionaries, expired by the clock the caller passes in."""

    backend = "memory"

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float]] = {}  # key -> (value, expires at)
        self._leases: dict[str, dict[str, float]] = {}  # key -> member -> expires at
        self._pruned_at = 0.0

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    def _get(self, key: str | None, now: float) -> float:
        if key is None:
            return 0.0
        entry = self._values.get(key)
        return entry[0] if entry is not None and entry[1] > now else 0.0

    def _live_leases(self, key: str, now: float) -> dict[str, float]:
        leases = self._leases.setdefault(key, {})
        for member in [m for m, expires in leases.items() if expires <= now]:
            del leases[member]
        return leases

    def _tally(self, check: Check, now: float) -> Tally:
        if check.kind == "lease":
            leases = self._leases.setdefault(check.key, {})
            if exceeds(len(leases), check.amount, check.limit):  # only then can lapsed leases matter
                leases = self._live_leases(check.key, now)
            return Tally(float(len(leases)), float(len(leases)))
        current = self._get(check.key, now)
        previous = self._get(check.prev_key, now)
        return Tally(current + previous * check.prev_share, current, previous)

    async def reserve(self, checks: Sequence[Check], now: float) -> Admission:
        """Reserve every check's amount, or none if any would go over its limit."""
        self._prune(now)
        tallies: list[Tally] = []
        for index, check in enumerate(checks):
            tally = self._tally(check, now)
            tallies.append(tally)
            if exceeds(tally.used, check.amount, check.limit):
                return Admission(tallies, refused=index)
        for check in checks:
            if check.kind == "lease":
                self._leases[check.key][check.member] = check.expires
            else:
                self._values[check.key] = (self._get(check.key, now) + check.amount, now + check.ttl)
        return Admission(tallies)

    async def flush(self) -> None:
        """Nothing is ever pending."""

    def settle(self, adjustments: Sequence[Adjustment], now: float) -> None:
        """Replace estimates by actuals and release leases; counters that expired meanwhile stay gone."""
        for step in adjustments:
            if step.member is not None:
                self._leases.get(step.key, {}).pop(step.member, None)
                continue
            entry = self._values.get(step.key)
            if entry is not None and entry[1] > now:
                self._values[step.key] = (entry[0] + step.amount, entry[1])

    def renew(self, leases: Sequence[tuple[str, str]], expires: float, ttl: int) -> None:
        """Move the expiry of the leases still held to ``expires``; released ones stay released."""
        for key, member in leases:
            held = self._leases.get(key)
            if held is not None and member in held:
                held[member] = expires

    def _prune(self, now: float) -> None:
        if now - self._pruned_at < _PRUNE_EVERY:
            return
        self._pruned_at = now
        for key in [k for k, (_, expires) in self._values.items() if expires <= now]:
            del self._values[key]
        for key in list(self._leases):
            if not self._live_leases(key, now):
                del self._leases[key]

    async def read(self, key: str, now: float) -> float:
        """A counter's value, or the number of live leases (tests and debugging)."""
        if key in self._leases:
            return float(len(self._live_leases(key, now)))
        return self._get(key, now)

    def status(self) -> dict[str, Any]:
        """Always healthy; says that the counts are this process's own."""
        return {"backend": self.backend, "scope": "process", "healthy": True, "counters": len(self._values)}
