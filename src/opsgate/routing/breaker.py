"""A circuit breaker per deployment: closed → open → half-open → closed.

Opens after ``consecutive_failures`` failures in a row, or when the failure share of the last
``window_seconds`` reaches ``error_rate`` over at least ``min_requests`` calls. While open, calls
are refused; after ``open_seconds`` up to ``half_open_probes`` probe calls go through, and that
many successes close it again (one failure re-opens it). Only the deployment's own failures count
(5xx, timeouts, connection errors, overload) — never a client's 4xx.

This breaker is per process. ``shared_breaker.SharedCircuitBreaker`` keeps the same state machine
in Redis for replicas that should open and close together, and falls back to this one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, Protocol

from opsgate.domain.reliability_config import BreakerConfig

State = Literal["closed", "open", "half_open"]


class Breaker(Protocol):
    """What routing needs from a breaker, per process or shared."""

    @property
    def state(self) -> State:
        """The current state."""
        ...

    def allow(self) -> bool:
        """Whether a call may go to the deployment now."""
        ...

    def record(self, ok: bool) -> None:
        """The outcome of a call that ``allow`` let through."""
        ...

    def release(self) -> None:
        """A call that ``allow`` let through ended without a verdict (load shed, cancelled)."""
        ...

    def status(self) -> dict[str, Any]:
        """For ``/readyz``, the admin API and metrics."""
        ...


class CircuitBreaker:
    """The breaker of one deployment (per process)."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._state: State = "closed"
        self._opened_at = 0.0
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()
        self._probes_in_flight = 0
        self._probe_successes = 0
        self.opened_count = 0
        self.last_reason: str | None = None

    @property
    def state(self) -> State:
        """The current state (an open breaker turns half-open once its time is up)."""
        if self._state == "open" and self._clock() - self._opened_at >= self.config.open_seconds:
            self._state = "half_open"
            self._probes_in_flight = 0
            self._probe_successes = 0
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to this deployment now (a half-open breaker admits a few probes)."""
        if not self.config.enabled:
            return True
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and self._probes_in_flight < self.config.half_open_probes:
            self._probes_in_flight += 1
            return True
        return False

    def record(self, ok: bool) -> None:
        """Feed the outcome of a call that ``allow`` let through."""
        if not self.config.enabled:
            return
        now = self._clock()
        state = self.state
        if state == "half_open":
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            if not ok:
                self._open(now, "a half-open probe failed")
                return
            self._probe_successes += 1
            if self._probe_successes >= self.config.half_open_probes:
                self._close()
            return
        self._window.append((now, ok))
        horizon = now - self.config.window_seconds
        while self._window and self._window[0][0] < horizon:
            self._window.popleft()
        self._consecutive = 0 if ok else self._consecutive + 1
        if state != "closed" or ok:
            return
        if self._consecutive >= self.config.consecutive_failures:
            self._open(now, f"{self._consecutive} consecutive failures")
            return
        calls = len(self._window)
        if calls >= self.config.min_requests:
            failures = sum(1 for _, good in self._window if not good)
            if failures / calls >= self.config.error_rate:
                self._open(now, f"{failures} of {calls} calls failed in {self.config.window_seconds:.0f}s")

    def release(self) -> None:
        """Free a half-open probe slot taken by a call that ended without a verdict.

        Without this a probe that was shed or cancelled would hold its slot for good, and the
        breaker would stay half-open, refusing every call.
        """
        if self._probes_in_flight > 0:
            self._probes_in_flight -= 1

    def _open(self, now: float, reason: str) -> None:
        self._state = "open"
        self._opened_at = now
        self.opened_count += 1
        self.last_reason = reason

    def _close(self) -> None:
        self._state = "closed"
        self._consecutive = 0
        self._window.clear()

    def status(self) -> dict[str, Any]:
        """For ``/readyz``, the admin API and the record."""
        return {
            "scope": "process",
            "state": self.state,
            "opened": self.opened_count,
            "reason": self.last_reason,
            "consecutive_failures": self._consecutive,
        }
