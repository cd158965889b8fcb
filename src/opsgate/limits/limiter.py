"""Reserve-then-settle over a counter store: the one place the limit rules are applied.

``reserve`` puts a request's estimate (one request, its tokens, its cost, one slot in flight) on
every counter that applies, all or none, before the call; ``settle`` replaces the estimate by what
the call really used (or by nothing, if it failed) and frees the slot. Concurrent requests therefore
see each other's reservations, and a budget is overshot only when a request uses more than it
reserved (its prompt was longer than estimated).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from opsgate.domain.reliability_config import LimitRule
from opsgate.limits.checks import (
    EPSILON,
    Adjustment,
    Admission,
    Check,
    Demand,
    Identity,
    Tally,
    amount_text,
    duration_text,
    plan,
    retry_after,
    rule_ids,
)
from opsgate.limits.errors import CountersUnavailable, LimitsUnavailableError, RateLimitError

log = logging.getLogger("opsgate.limits")

# A slot in flight lapses this long after its last renewal, so a replica that died (or a release lost
# for good) blocks a slot for a minute, not a quarter of an hour. While the request runs, a heartbeat
# renews its lease every third of that, for at most MAX_HOLD_SECONDS (a request never settled by a bug
# then lapses too, as the old fixed 900 s lease did).
LEASE_SECONDS = 60.0
MAX_HOLD_SECONDS = 900.0


class CounterStore(Protocol):
    """Where the counts live: this process (``MemoryCounters``) or Redis (``RedisCounters``)."""

    backend: str

    async def start(self) -> None:
        """Open connections."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...

    async def reserve(self, checks: Sequence[Check], now: float) -> Admission:
        """Atomically: if every check fits, add every amount; else change nothing."""
        ...

    def settle(self, adjustments: Sequence[Adjustment], now: float) -> None:
        """Apply the adjustments now, or queue them ahead of any later reservation (never blocks)."""
        ...

    def renew(self, leases: Sequence[tuple[str, str]], expires: float, ttl: int) -> None:
        """Move the expiry of the (key, member) leases still held to ``expires`` (never blocks)."""
        ...

    async def flush(self) -> None:
        """Wait until queued adjustments are applied."""
        ...

    def status(self) -> dict[str, Any]:
        """Health, for /readyz and metrics."""
        ...


@dataclass(slots=True)
class Reservation:
    """What one admitted request holds until it is settled."""

    checks: list[Check]
    tallies: list[Tally]
    counted: bool = True  # False: admitted without counting while the store was unreachable (fail open)
    settled: bool = False
    lease: str | None = None  # the member of its concurrent slots, renewed by the heartbeat until settled

    def headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` headers, as OpenAI sends them: the tightest request and token limits."""
        return rate_headers(self.checks, self.tallies, reserved=True) if self.counted else {}


def rate_headers(checks: Sequence[Check], tallies: Sequence[Tally], *, reserved: bool) -> dict[str, str]:
    """Limit, remaining and reset for the tightest requests-per-minute and tokens-per-minute check read.

    Only the caller's own rules (key, user, key+model, user+model, the key's limits): a shared rule's
    remaining count would show other tenants' traffic, request by request (probe-e F9).
    """
    out: dict[str, str] = {}
    for metric, name in (("requests_per_minute", "requests"), ("tokens_per_minute", "tokens")):
        tightest: tuple[float, float, float] | None = None
        for check, tally in zip(checks, tallies, strict=False):  # on refusal, only the checks read
            if check.metric == metric and not check.shared:
                remaining = check.limit - tally.used - (check.amount if reserved else 0.0)
                if tightest is None or remaining < tightest[1]:
                    tightest = (check.limit, remaining, check.resets_in)
        if tightest is not None:
            out[f"x-ratelimit-limit-{name}"] = str(int(tightest[0]))
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(tightest[1] + EPSILON)))
            out[f"x-ratelimit-reset-{name}"] = reset_text(tightest[2])
    return out


def reset_text(seconds: float) -> str:
    """A reset time the way OpenAI writes it: ``17ms``, ``1s``, ``6m0s``."""
    millis = max(0, round(seconds * 1000))
    if millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def refusal(check: Check, tally: Tally, headers: dict[str, str]) -> RateLimitError:
    """The 429 for ``check``: which limit, for whom, how much is used, and when to retry."""
    used, limit = amount_text(check.metric, tally.used), amount_text(check.metric, check.limit)
    need = amount_text(check.metric, check.amount)
    if check.too_large():
        advice = "lower max_tokens" if check.metric == "tokens_per_minute" else "it passes only if the limit is raised"
        message = f"{check.metric} for {check.scope}: this request alone needs ~{need}, over the limit of {limit}; "
        return RateLimitError(message + advice, code=check.code, retry_after=None, headers=headers)
    wait = retry_after(check, tally)
    if check.shared:
        # What a 429 says anyway (this shared limit is full, when to retry), not how much others used.
        message = f"{check.metric} for {check.scope}, shared by every caller: over its limit of {limit}"
    elif check.kind == "lease":
        message = f"concurrent for {check.scope}: {used} of {limit} requests in flight"
    elif check.metric == "requests_per_minute":
        message = f"requests_per_minute for {check.scope}: {used} of {limit} used"
    else:
        message = f"{check.metric} for {check.scope}: {used} of {limit} used, this request needs ~{need}"
    return RateLimitError(
        f"{message}; retry in {duration_text(wait)}", code=check.code, retry_after=wait, headers=headers
    )


class Limiter:
    """Applies ``rules`` with counts kept in ``store``; ``on_store_error`` says what an outage means."""

    def __init__(
        self,
        rules: Sequence[LimitRule],
        store: CounterStore,
        *,
        on_store_error: Literal["open", "closed"] = "closed",
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = list(rules)
        self.rule_ids = rule_ids(self.rules)
        self.store = store
        self.on_store_error = on_store_error
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.admitted = 0
        self.refused: dict[str, int] = {}
        self.passed_uncounted = 0
        self.refused_unavailable = 0
        self._held: dict[str, tuple[float, list[Check]]] = {}  # lease member -> (reserved at, its checks)
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the store and start renewing the leases of requests in flight."""
        await self.store.start()
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew_forever())

    async def close(self) -> None:
        """Stop renewing, apply what is queued, then close the store."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        await self.store.close()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            self.renew_leases()

    def renew_leases(self) -> None:
        """One heartbeat: push back the expiry of every slot still held, in one store call."""
        now = self.clock()
        leases: list[tuple[str, str]] = []
        for member, (since, checks) in list(self._held.items()):
            if now - since > MAX_HOLD_SECONDS:
                del self._held[member]  # never settled: let it lapse
            else:
                leases += [(check.key, member) for check in checks if check.kind == "lease"]
        if leases:
            self.store.renew(leases, now + self.lease_seconds, math.ceil(self.lease_seconds) + 1)

    async def reserve(
        self,
        who: Identity,
        demand: Demand,
        key_rule: LimitRule | None = None,
        inherited: Sequence[tuple[str, LimitRule]] = (),
    ) -> Reservation | None:
        """Reserve ``demand`` on every rule that applies (and the API key's own ``key_rule``); None when none does.

        ``inherited``: the limits of the keys that minted the caller's key, each counted under its own key id
        (``Principal.inherited_limits``): the request reserves on them too, all or nothing.

        Raises ``RateLimitError`` (429) when a limit would be exceeded, and ``LimitsUnavailableError``
        (503) when the store is unreachable and ``on_store_error`` is ``closed``.
        """
        now = self.clock()
        rules, ids = self.rules, self.rule_ids
        if key_rule is not None:
            rules, ids = [*rules, key_rule], [*ids, "apikey"]
        member = secrets.token_hex(8)
        checks = plan(rules, ids, who, demand, now, member, self.lease_seconds)
        for counter, rule in inherited:
            checks += plan([rule], ["apikey"], replace(who, key=counter), demand, now, member, self.lease_seconds)
        if not checks:
            return None
        for check in checks:
            if check.too_large():
                self.refused[check.metric] = self.refused.get(check.metric, 0) + 1
                raise refusal(check, Tally(0.0), {})
        try:
            admission = await self.store.reserve(checks, now)
        except CountersUnavailable as error:
            if self.on_store_error == "open":
                self.passed_uncounted += 1
                return Reservation(checks, [], counted=False)
            self.refused_unavailable += 1
            raise LimitsUnavailableError(
                f"rate limits and budgets cannot be checked: their Redis is unreachable ({error}); "
                "limits.on_redis_error is closed, so requests are refused until it is back"
            ) from None
        if admission.refused is not None:
            check = checks[admission.refused]
            self.refused[check.metric] = self.refused.get(check.metric, 0) + 1
            headers = rate_headers(checks, admission.tallies, reserved=False)
            raise refusal(check, admission.tallies[admission.refused], headers)
        self.admitted += 1
        # Registered whether or not a check is a lease: cheaper per request than looking (the heartbeat does).
        self._held[member] = (now, checks)
        return Reservation(checks, admission.tallies, lease=member)

    def settle(self, reservation: Reservation, tokens: float | None, cost: float | None) -> None:
        """Replace the estimate by the actual ``tokens`` and ``cost`` (None: keep the estimate); free the slot.

        Never blocks: the in-process store applies it at once, Redis queues it ahead of any later
        reservation (a failure there is counted, and leases then lapse on their own). A second call
        for the same reservation does nothing.
        """
        if reservation.settled or not reservation.counted:
            reservation.settled = True
            return
        reservation.settled = True
        if reservation.lease is not None:
            self._held.pop(reservation.lease, None)
        steps: list[Adjustment] = []
        for check in reservation.checks:
            if check.kind == "lease":
                steps.append(Adjustment(check.key, member=check.member))
                continue
            actual = tokens if check.metric == "tokens_per_minute" else cost if check.kind == "total" else None
            if actual is not None and actual != check.amount:
                steps.append(Adjustment(check.key, actual - check.amount))
        self.store.settle(steps, self.clock())

    async def flush(self) -> None:
        """Wait until every settle so far is applied."""
        await self.store.flush()

    def status(self) -> dict[str, Any]:
        """The store's health plus what the limits did, for /readyz and metrics."""
        status = self.store.status()
        if status["backend"] == "redis":
            status["on_redis_error"] = self.on_store_error
        return {
            **status,
            "rules": len(self.rules),
            "admitted": self.admitted,
            "refused": dict(self.refused),
            "passed_uncounted": self.passed_uncounted,
            "refused_unavailable": self.refused_unavailable,
            "in_flight": len(self._held),
        }
