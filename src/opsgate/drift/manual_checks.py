"""Admission for manual drift checks (``POST /admin/drift/check``): each costs a window read, tests and
embeddings (~0.2 s of CPU with the MiniLM) and stores a row, so a tenant admin's loop must not be able to
run them back to back (a probe ran 136 a second, and the operator's ``/admin/drift/status`` went from 8 to
189 ms after 300k stored checks).

A tenant admin gets one check of an alias per ``interval`` seconds, and each caller scope (a tenant, or
the operators together) one check at a time; past either, a 429 with ``Retry-After``. Operators have no
interval (a backfill over past windows is theirs to run) but still run one at a time. Per replica: the
limit scales with replicas, which an operator chooses.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from opsgate.limits.errors import RateLimitError

MAX_TRACKED = 10_000  # (tenant, alias) pairs remembered; the oldest are forgotten first


class ManualChecks:
    """Per-replica admission of manual drift checks."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._running: set[str | None] = set()

    @contextmanager
    def admit(self, tenant: str | None, alias: str, *, operator: bool) -> Iterator[None]:
        """Hold a slot for one check by ``tenant``'s caller (None with ``operator``); raises a 429 when over."""
        scope = None if operator else tenant or ""
        now = time.monotonic()
        with self._lock:
            if scope in self._running:
                raise RateLimitError(
                    "A drift check of this scope is already running; wait for it.",
                    code="drift_check_running",
                    retry_after=1,
                    headers={},
                )
            if not operator:
                key = (tenant or "", alias)
                last = self._last.get(key)
                if last is not None and now - last < self.interval:
                    raise RateLimitError(
                        f"At most one manual drift check of '{alias}' per {self.interval:g} s for a tenant.",
                        code="drift_check_rate_limited",
                        retry_after=self.interval - (now - last),
                        headers={},
                    )
                self._last[key] = now
                self._last.move_to_end(key)
                while len(self._last) > MAX_TRACKED:
                    self._last.popitem(last=False)
            self._running.add(scope)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(scope)
