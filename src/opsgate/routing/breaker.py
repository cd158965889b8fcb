"""A circuit breaker per deployment: closed → open → half-open → closed.

Opens after ``consecutive_failures`` failures in a row, or when the failure share of the last
``window_seconds`` reaches ``error_rate`` over at least ``min_requests`` calls. While open, calls
are refused; after ``open_seconds`` up to ``half_open_probes`` probe calls go through, and that
many successes close it again (one failure re-opens it). Only the deployment's own failures count
(5xx, timeouts, connection errors, overload) — never a client's 4xx.

**One tenant alone cannot open it.** A timeout or 5xx can still be one client's doing (a huge
``max_tokens`` that runs past ``first_byte``), and a breaker is shared by every tenant of the
deployment. So each outcome carries its tenant, and when more than one tenant used the deployment in
the window, a rule that is met is held back only on evidence that the deployment works for the
others: the tenants other than the one that contributed the most failures had at least one success
in the window, and judged alone they do not meet the rule (their failure share is under
``error_rate``, without ``min_requests`` for them; their own failures in the trailing run are under
``consecutive_failures``). When the others had no success in the window the rule applies to every
call, so in an outage that only one tenant's traffic hits, the breaker opens at the latest once the
others' last success has left the window (``window_seconds`` later), not never. A consecutive rule held
back still leaves the rate rule to be checked. Calls without a tenant (the operator, auth off) are
never removed, nor do they count as a second tenant, so a single-tenant or auth-off deployment opens
exactly as before. A client's own 4xx is no outcome at all (the router releases the call, as for
load shedding): it neither holds a breaker closed nor closes a half-open one. A rule held back this
way is counted (``spared_one_tenant`` in the status) and logged, naming the tenant, at most once per
window. The bookkeeping is incremental (running totals per tenant, kept with the window), so the
request path pays a dict update per call and the rule's check stays O(1) until a rule is met.

This breaker is per process. ``shared_breaker.SharedCircuitBreaker`` keeps the same state machine
in Redis for replicas that should open and close together, and falls back to this one.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, Protocol

from opsgate.domain.reliability_config import BreakerConfig

State = Literal["closed", "open", "half_open"]
log = logging.getLogger("opsgate.routing.breaker")


class Breaker(Protocol):
    """What routing needs from a breaker, per process or shared."""

    @property
    def state(self) -> State:
        """The current state."""
        ...

    def allow(self) -> bool:
        """Whether a call may go to the deployment now."""
        ...

    def record(self, ok: bool, tenant: str | None = None) -> None:
        """The outcome of a call that ``allow`` let through, and whose call it was (None: no tenant)."""
        ...

    def release(self) -> None:
        """A call that ``allow`` let through ended without a verdict (load shed, cancelled)."""
        ...

    def status(self) -> dict[str, Any]:
        """For ``/readyz``, the admin API and metrics."""
        ...


class CircuitBreaker:
    """The breaker of one deployment (per process)."""

    def __init__(
        self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic, label: str = "a deployment"
    ) -> None:
        self.config = config
        self.label = label
        self._clock = clock
        self._state: State = "closed"
        self._opened_at = 0.0
        self._consecutive = 0
        self._window: deque[tuple[float, bool, str | None]] = deque()
        self._failures = 0  # failures in the window (a running total)
        # Per tenant in the window: [calls, failures]; an entry goes when its calls leave the window.
        self._tenants: dict[str | None, list[int]] = {}
        self._run: dict[str | None, int] = {}  # the trailing run of failures, per tenant
        self._probes_in_flight = 0
        self._probe_successes = 0
        self.opened_count = 0
        self.last_reason: str | None = None
        self.spared = 0  # rules met that did not hold without one tenant's failures
        self._spared_logged = -1e18

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

    def record(self, ok: bool, tenant: str | None = None) -> None:
        """Feed the outcome of a call that ``allow`` let through, with its tenant (None: no tenant)."""
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
        window, tenants = self._window, self._tenants
        window.append((now, ok, tenant))
        counts = tenants.get(tenant)
        if counts is None:
            tenants[tenant] = counts = [0, 0]
        counts[0] += 1
        if not ok:
            counts[1] += 1
            self._failures += 1
        horizon = now - self.config.window_seconds
        while window[0][0] < horizon:
            _, good, who = window.popleft()
            gone = tenants[who]
            gone[0] -= 1
            if not good:
                gone[1] -= 1
                self._failures -= 1
            if not gone[0]:
                del tenants[who]
        if ok:
            self._consecutive = 0
            if self._run:
                self._run.clear()
            return
        self._consecutive += 1
        self._run[tenant] = self._run.get(tenant, 0) + 1
        if state != "closed":
            return
        config = self.config
        held: tuple[str, str] | None = None  # a rule met but held back: (the top tenant, the rule)
        if self._consecutive >= config.consecutive_failures:
            reason = f"{self._consecutive} consecutive failures"
            top = self._top_tenant(self._run)
            if top is None or not self._works_for_others(
                top, self._consecutive - self._run[top] < config.consecutive_failures
            ):
                self._open(now, reason)
                return
            held = (top, reason)  # …and the rate rule may still hold without that tenant
        calls, failures = len(window), self._failures
        if calls >= config.min_requests and failures / calls >= config.error_rate:
            reason = f"{failures} of {calls} calls failed in {config.window_seconds:.0f}s"
            top = self._top_tenant({who: n for who, (_, n) in tenants.items()})
            if top is None:
                self._open(now, reason)
                return
            top_calls, top_failures = tenants[top]
            rest_calls, rest_failures = calls - top_calls, failures - top_failures
            # Without min_requests for the rest: one success among few calls is evidence enough.
            if not self._works_for_others(top, rest_failures < config.error_rate * rest_calls):
                self._open(now, reason)
                return
            held = held or (top, reason)
        if held is not None:
            self._spare(now, *held)  # counted once per outcome, whichever rules were held back

    def _works_for_others(self, top: str, rest_below: bool) -> bool:
        """Whether the window shows the deployment working for the tenants other than ``top``: they
        had a success in it, and judged alone they do not meet the rule (``rest_below``)."""
        if not rest_below:
            return False
        top_calls, top_failures = self._tenants.get(top) or (0, 0)  # its run may be older than the window
        return len(self._window) - self._failures - (top_calls - top_failures) > 0

    def _top_tenant(self, failures: dict[str | None, int]) -> str | None:
        """The tenant with the most ``failures`` when the window holds more than one tenant; else None.

        None (no attribution, the plain rule applies) when at most one tenant used the deployment in
        the window: a single-tenant or auth-off deployment opens as it always did. Calls without a
        tenant (the operator) are neither a second tenant nor removed.
        """
        if len(self._tenants) - (None in self._tenants) < 2:
            return None
        top: str | None = None
        most = 0
        for who, count in failures.items():
            if who is not None and count > most:
                top, most = who, count
        return top

    def _spare(self, now: float, tenant: str, reason: str) -> None:
        self.spared += 1
        if now - self._spared_logged >= self.config.window_seconds:
            self._spared_logged = now
            log.warning(
                "breaker of %s: %s, but not without tenant %s's failures; it stays closed",
                self.label,
                reason,
                tenant,
            )

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
        self._failures = 0
        self._tenants.clear()
        self._run.clear()

    def status(self) -> dict[str, Any]:
        """For ``/readyz``, the admin API and the record."""
        return {
            "scope": "process",
            "state": self.state,
            "opened": self.opened_count,
            "reason": self.last_reason,
            "consecutive_failures": self._consecutive,
            "spared_one_tenant": self.spared,
        }
