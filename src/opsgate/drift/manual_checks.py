"""Admission for manual drift checks (``POST /admin/drift/check``): each costs a window read, tests and
embeddings (~0.2 s of CPU with the MiniLM) and stores a row, so a tenant admin's loop must not be able to
run them back to back (a probe ran 136 a second, and the operator's ``/admin/drift/status`` went from 8 to
189 ms after 300k stored checks).

A tenant admin gets one check of an alias per ``interval`` seconds, and each caller scope (a tenant, or
the operators together) one check at a time; past either, a 429 with ``Retry-After``. Operators have no
interval (a backfill over past windows is theirs to run) but still run one at a time. Per replica: the
limit scales with replicas, which an operator chooses.

Baseline PUTs are admitted by the same class (``action="drift baseline change"``, not exclusive): each
change is an append-only audit row, and a probe's tenant admin wrote 4,261 of them in 15 s.
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

    def __init__(
        self, interval: float, *, action: str = "manual drift check", code: str = "drift_check", exclusive: bool = True
    ) -> None:
        """``action`` names it in messages, ``code`` prefixes the error codes; ``exclusive``: one at a time
        per caller scope as well as the interval."""
        self.interval = interval
        self.action = action
        self.code = code
        self.exclusive = exclusive
        self._lock = threading.Lock()
        self._last: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._running: set[str | None] = set()

    @contextmanager
    def admit(self, tenant: str | None, alias: str, *, operator: bool) -> Iterator[None]:
        """Hold a slot for one check by ``tenant``'s caller (None with ``operator``); raises a 429 when over."""
        scope = None if operator else tenant or ""
        now = time.monotonic()
        with self._lock:
            if self.exclusive and scope in self._running:
                raise RateLimitError(
                    f"A {self.action} of this scope is already running; wait for it.",
                    code=f"{self.code}_running",
                    retry_after=1,
                    headers={},
                )
            if not operator:
                key = (tenant or "", alias)
                last = self._last.get(key)
                if last is not None and now - last < self.interval:
                    raise RateLimitError(
                        f"At most one {self.action} of '{alias}' per {self.interval:g} s for a tenant.",
                        code=f"{self.code}_rate_limited",
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
