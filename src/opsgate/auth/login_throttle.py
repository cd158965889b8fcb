"""Failed dashboard logins per client address: after too many in a window, ``POST /ui/login`` is a 429.

In this process only (each replica counts on its own, so N replicas allow up to N times the limit):
the shared counters of ``limits/`` are built for the inference limits' reserve-and-settle and need
``limits.redis``, which a gateway may not have. A success does not clear an address's failures, so
one valid key cannot be used to reset the count between guesses. The address is the TCP peer: behind
a reverse proxy every client shares the proxy's, and the limit then applies to all of them together.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

_MAX_CLIENTS = 10_000


class LoginThrottle:
    """Counts failed logins per address in fixed windows that start at an address's first failure."""

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = _MAX_CLIENTS,
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.clock = clock
        self._max_clients = max_clients
        # address -> (failures, window start); oldest window first, so the bound drops the stalest.
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.failed_total = 0
        self.refused_total = 0

    def retry_after(self, client: str) -> float | None:
        """Seconds until ``client`` may try again, or None when it may try now (a refusal is counted)."""
        entry = self._live(client, self.clock())
        if entry is None or entry[0] < self.max_failures:
            return None
        self.refused_total += 1
        return max(0.0, entry[1] + self.window - self.clock())

    def failed(self, client: str) -> int:
        """Count one failed login of ``client``; its failures in the current window."""
        now = self.clock()
        entry = self._live(client, now)
        if entry is None:
            while len(self._failures) >= self._max_clients:
                self._failures.popitem(last=False)
            entry = (0, now)
        self._failures[client] = (entry[0] + 1, entry[1])
        self.failed_total += 1
        return entry[0] + 1

    def _live(self, client: str, now: float) -> tuple[int, float] | None:
        entry = self._failures.get(client)
        if entry is not None and now - entry[1] >= self.window:
            del self._failures[client]  # its window is over
            return None
        return entry

    def status(self) -> dict[str, Any]:
        """For /readyz: the settings and this process's counts."""
        return {
            "max_failures": self.max_failures,
            "window_seconds": self.window,
            "failed_logins": self.failed_total,
            "refused_logins": self.refused_total,
            "throttled_addresses": sum(1 for n, _ in self._failures.values() if n >= self.max_failures),
        }
