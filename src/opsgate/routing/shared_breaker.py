"""Circuit breakers shared by replicas through Redis: they open together and close together.

A deployment whose ``breaker.shared`` names a Redis gets a ``SharedCircuitBreaker``. The state
machine is the per-process one's (``breaker.py``), but it runs in Redis, in one Lua script:

    {prefix}{label}          hash: state (c/o), until (Redis time), opened, reason, consec,
                             pok (probe successes), seq, spared, the window's buckets w:o:<n> /
                             w:f:<n>, per tenant that failed u:c:<n>:<t> / u:f:<n>:<t> (calls,
                             failures) and uf<t> (the last bucket it failed in), the trailing
                             run's failures r:<t>, and who uses it: pt (the
                             latest tenant), pb (its last bucket), ob (the last bucket another tenant
                             was seen in) (<t>: a digest of the tenant's name)
    {prefix}{label}:probes   sorted set: half-open probe leases (member → expiry)

**No Redis on the request path.** ``allow`` and ``record`` only read and bump local fields. Each
replica's ``BreakerSync`` sends, every ``sync_interval_seconds``, one script call for all its
shared breakers: the outcomes counted since the last call go in, and every breaker's shared state
comes back. So a replica learns of an opening (or closing) decided elsewhere within
twice ``sync_interval_seconds`` plus a round trip — the staleness bound. A replica that sees
``consecutive_failures`` failures in a row, or a probe's result, wakes the sync at once rather
than waiting for the tick. The window uses Redis's clock (``TIME``), so replicas' clocks do not matter.

**Half-open probes are limited across replicas.** When the open time is up, a replica that gets a
call asks Redis for a probe lease in its next sync (the call itself goes to another deployment);
Redis grants at most ``half_open_probes`` leases in all. The next call on that replica is the
probe; its result closes the breaker for everyone after ``half_open_probes`` successes, or
re-opens it on a failure. A lease nobody uses goes back after ``PERMIT_SECONDS``; one whose
replica died lapses after ``max(open_seconds, PROBE_LEASE_MIN)``.

**Redis unreachable.** Every outcome also feeds a per-process ``CircuitBreaker``. While the last
successful sync is older than the staleness bound (Redis down, slow, or not reached yet), each
replica uses that local breaker: the outage is logged once when it starts and once when it ends,
and each deployment's breaker status (``/readyz``, ``GET /admin/deployments``) says
``"scope": "local_fallback"`` with the Redis error. What a failed sync carried is dropped, not
replayed when Redis returns (it would be stale by then). All keys of one call go to one script,
so Redis Cluster is not supported.

**One tenant alone cannot open it** (the rule of ``breaker.py``, across replicas): each report
carries, per tenant, its calls, failures and failures in the trailing run; the script keeps, per
bucket, the calls and failures of the tenants that failed in the window (from the sync round of a
tenant's first failure on; a healthy tenant adds no field), the run per tenant, and in three fields
whether another tenant used the deployment within the window. When a rule is met while more than one
tenant did, it is held back only if the tenants other than the one with the most failures had a
success in the window and do not meet the rule alone, as in ``breaker.py``. One difference remains:
the top tenant's successes in sync rounds before its first failure in the window count as the
others' (the script has no field for a tenant that never failed), so where the local breaker would
open at once, a shared one may wait until those rounds leave the window (at most ``window_seconds``).
Calls without a tenant are in the totals only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from opsgate.domain.reliability_config import BreakerConfig
from opsgate.limits.redis_counters import safe_url
from opsgate.routing.breaker import Breaker, CircuitBreaker, State
from opsgate.routing.shared_breaker_script import breaker_script

log = logging.getLogger("opsgate.routing.breaker")

PERMIT_SECONDS = 1.0  # a granted probe lease unused this long is handed back, so another replica can probe
PROBE_LEASE_MIN = 30.0  # a probe is an LLM call: its lease must outlast a slow answer
KEY_TTL_SECONDS = 86_400  # a deployment removed from config leaves nothing behind for long
_BUCKETS = 30  # the window is kept as this many buckets in the hash


@dataclass(slots=True)
class _Report:
    """What one breaker sends in one sync."""

    ok: int = 0
    fail: int = 0
    trailing: int = 0
    want: int = 0
    results: list[tuple[str, bool]] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    tenants: dict[str, list[int]] = field(default_factory=dict)  # tenant: [calls, failures, failures in the run]
    run: bool = False  # some tenant has failures in the trailing run (cleared on a success)


_DIGESTS: dict[str, str] = {}


def tenant_digest(tenant: str) -> str:
    """A short, space-free name for ``tenant`` in the script's argument and the hash's fields."""
    digest = _DIGESTS.get(tenant)
    if digest is None:
        if len(_DIGESTS) > 65_536:
            _DIGESTS.clear()
        digest = _DIGESTS[tenant] = hashlib.blake2b(tenant.encode(), digest_size=8).hexdigest()
    return digest


class SharedCircuitBreaker:
    """A deployment's breaker whose state lives in Redis (see the module docstring)."""

    def __init__(self, config: BreakerConfig, key: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.key = key
        self.local = CircuitBreaker(config, clock, key)  # fed every outcome, so the fallback is warm
        # The config part of this breaker's script argument, built once.
        lease = max(config.open_seconds, PROBE_LEASE_MIN)
        self.script_fields = " ".join(
            str(value)
            for value in (
                config.consecutive_failures,
                repr(config.error_rate),
                repr(config.window_seconds),
                config.min_requests,
                repr(config.open_seconds),
                config.half_open_probes,
                repr(lease),
            )
        )
        self._clock = clock
        self.sync: BreakerSync | None = None  # attached by the BreakerSync that serves it
        # The shared state as of the last sync.
        self._shared: Literal["closed", "open"] = "closed"
        self._open_until = 0.0  # this process's clock
        self._shared_opened: int | None = None
        self._reason: str | None = None
        self._consecutive = 0
        self._window = (0, 0)
        self._probe_successes = 0
        self._spared = 0
        # What the next sync reports.
        self._report = _Report()
        self._permits: list[tuple[str, float]] = []  # granted probe leases not used yet: (member, use by)
        self._probes: deque[str] = deque()  # probes in flight, oldest first
        self._asked = False  # the sync in flight asks for a probe lease
        self._denied = False  # …and the last one that asked got none
        self.opened_count = 0  # openings this replica saw (shared or, during an outage, local)

    @property
    def shared_active(self) -> bool:
        """Whether the shared state is fresh enough to follow (else the local breaker decides)."""
        return self.sync is not None and self.sync.active

    @property
    def state(self) -> State:
        """The shared state while Redis answers; the local breaker's otherwise."""
        if not self.shared_active:
            return self.local.state
        if self._shared == "open":
            return "half_open" if self._clock() >= self._open_until else "open"
        return "closed"

    def allow(self) -> bool:
        """Closed: yes. Half-open: only with a probe lease from Redis (asked for now, if none)."""
        if not self.config.enabled:
            return True
        sync = self.sync
        if sync is None or not sync.active:
            return self.local.allow()
        if self._shared == "closed":
            return True
        if self.state == "half_open":
            now = self._clock()
            while self._permits:
                member, use_by = self._permits.pop()
                if use_by > now:
                    self._probes.append(member)
                    return True
                self._report.releases.append(member)
            if not self._report.want:
                self._report.want = 1
                if not self._denied:  # refused last time (another replica probes): wait for the tick
                    self._wake()
        return False

    def record(self, ok: bool, tenant: str | None = None) -> None:
        """Count an outcome for the next sync (and in the local breaker)."""
        before = self.local.opened_count
        self.local.record(ok, tenant)
        if not self.config.enabled:
            return
        if self.local.opened_count != before and not self.shared_active:
            self.opened_count += 1
        if self._probes:
            self._report.results.append((self._probes.popleft(), ok))
            if not ok:  # stop probing from here at once; the next sync brings the new open time
                self._shared, self._open_until = "open", self._clock() + self.config.open_seconds
            self._wake()
            return
        report = self._report
        counts: list[int] | None = None
        if tenant is not None:
            counts = report.tenants.get(tenant)
            if counts is None:
                report.tenants[tenant] = counts = [0, 0, 0]
            counts[0] += 1
        if ok:
            report.ok += 1
            report.trailing = 0
            if report.run:
                report.run = False
                for other in report.tenants.values():
                    other[2] = 0
        else:
            report.fail += 1
            report.trailing += 1
            if counts is not None:
                counts[1] += 1
                counts[2] += 1
                report.run = True
            if report.trailing == self.config.consecutive_failures:
                self._wake()  # enough to open it: tell the others now, not at the next tick

    def release(self) -> None:
        """A call ended without a verdict: hand its probe lease back."""
        self.local.release()
        if self._probes:
            self._report.releases.append(self._probes.popleft())
            self._wake()

    def _wake(self) -> None:
        if self.sync is not None:
            self.sync.wake()

    def take_report(self) -> _Report:
        """What to send now; counting starts afresh."""
        report, self._report = self._report, _Report()
        self._asked = report.want > 0
        now = self._clock()
        expired = [member for member, use_by in self._permits if use_by <= now]
        if expired:
            self._permits = [(m, u) for m, u in self._permits if u > now]
            report.releases.extend(expired)
        return report

    def apply(self, reply: list[bytes], at: int) -> int:
        """Take this breaker's shared state from a sync reply starting at ``at``; returns where the next starts."""
        now = self._clock()
        half_open = reply[at] == b"o" and float(reply[at + 1]) <= 0
        self._shared = "open" if reply[at] == b"o" else "closed"
        self._open_until = now + float(reply[at + 1])
        opened = int(reply[at + 2])
        if self._shared_opened is not None and opened > self._shared_opened:
            self.opened_count += opened - self._shared_opened
        self._shared_opened = opened
        self._reason = reply[at + 3].decode() or None
        self._consecutive = int(reply[at + 4])
        if int(reply[at + 5]) >= 0:  # -1: not read in this sync
            self._window = (int(reply[at + 5]), int(reply[at + 6]))
        self._probe_successes = int(reply[at + 7])
        self._spared = int(reply[at + 8])
        granted = int(reply[at + 9])
        members = [m.decode() for m in reply[at + 10 : at + 10 + granted]]
        self._denied = self._asked and not members
        if half_open:
            self._permits.extend((m, now + PERMIT_SECONDS) for m in members)
        else:  # a new spell: old leases are void, and calls still out are ordinary calls again
            self._permits.clear()
            self._probes.clear()
        return at + 10 + granted

    def status(self) -> dict[str, Any]:
        """Scope (shared or local fallback), state, and the sync's health."""
        shared = self.sync.status() if self.sync is not None else {"healthy": False, "last_error": "not started"}
        if not self.shared_active:
            return {
                **self.local.status(),
                "scope": "local_fallback",
                "opened": self.opened_count,
                "shared": shared,
            }
        calls, failures = self._window
        return {
            "scope": "shared",
            "state": self.state,
            "opened": self.opened_count,
            "reason": self._reason,
            "consecutive_failures": self._consecutive,
            "window_calls": calls,
            "window_failures": failures,
            "probe_successes": self._probe_successes,
            "spared_one_tenant": self._spared,
            "probes_here": len(self._probes),
            "shared": shared,
        }


class BreakerSync:
    """One Redis connection and one periodic script call for every shared breaker on one URL and prefix."""

    def __init__(
        self, url: str, prefix: str, breakers: list[SharedCircuitBreaker], interval: float, timeout: float = 0.5
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.breakers = breakers
        self.interval = interval
        self.timeout = timeout
        # Between two successful syncs: one interval, one call and one woken call; past that the state is stale.
        self.stale_after = 2 * interval + 2 * timeout
        self.replica = uuid.uuid4().hex[:12]
        self._client: aioredis.Redis | None = None
        self._script: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._last_ok: float | None = None
        # True from a successful sync until a failed one or ``stale_after`` without one (a timer, so
        # the request path reads a flag instead of the clock).
        self.active = False
        self._stale_timer: asyncio.TimerHandle | None = None
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.outages = 0
        self.errors = 0
        self.syncs = 0
        for breaker in breakers:
            breaker.sync = self

    def _went_stale(self) -> None:
        self.active = False
        log.warning(
            "breakers: no sync with Redis at %s for %.2fs; each replica uses its own breakers until one succeeds",
            safe_url(self.url),
            self.stale_after,
        )

    def wake(self) -> None:
        """Sync now rather than at the next tick (ignored during an outage: no tight retry loop)."""
        if self.down_since is None:
            self._wake.set()

    async def start(self) -> None:
        """Connect, sync once (so a replica starts with the shared state), then sync in the background."""
        await self.connect()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"breaker-sync-{self.prefix}")

    async def connect(self) -> None:
        """Open the connection and sync once; an unreachable Redis starts an outage, not a crash."""
        self._client = aioredis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # redis-py's default retries would stretch one failure to seconds. One at once, on a new
            # connection, for a connection error only: one Redis (or a NAT) closed while idle is no outage.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            single_connection_client=True,  # only the sync loop talks to Redis
        )
        self._script = self._client.register_script(breaker_script(_BUCKETS, KEY_TTL_SECONDS))
        await self.sync_once()

    async def close(self) -> None:
        """Stop syncing; send what is counted (best effort), then close the connection."""
        self._closing = True  # the loop also stops on this: 3.11's wait_for can swallow the cancel below
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            if self.down_since is None:
                await self.sync_once()
            await self._client.aclose()
            self._client = None
        if self._stale_timer is not None:  # after the last sync, which sets a new one
            self._stale_timer.cancel()
        self.active = False

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                # Python 3.11's wait_for returns the result when a cancel lands as the wait completes (a
                # woken sync while close() cancels): the cancel is lost, so the loop checks _closing too
                # (else close() awaited this task forever: a test hung 300 s under load).
                await asyncio.wait_for(self._wake.wait(), self.interval)
            if self._closing:
                return
            self._wake.clear()
            await self.sync_once()

    async def sync_once(self) -> None:
        """Report every breaker's outcomes and read back every shared state, in one script call."""
        reports = [breaker.take_report() for breaker in self.breakers]
        keys: list[str] = []
        args: list[str] = [self.replica]
        for breaker, report in zip(self.breakers, reports, strict=True):
            keys += [self.prefix + breaker.key, self.prefix + breaker.key + ":probes"]
            results = " ".join(f"{member} {1 if ok else 0}" for member, ok in report.results)
            releases = " ".join(report.releases)
            tenants = " ".join(f"{tenant_digest(t)} {c} {f} {r}" for t, (c, f, r) in report.tenants.items())
            args.append(
                f"{breaker.script_fields} {report.ok} {report.fail} {report.trailing} {report.want} "
                f"{len(report.results)} {results} {len(report.releases)} {releases} {len(report.tenants)} {tenants}"
            )
        if self._client is None:
            return
        try:
            async with asyncio.timeout(2 * self.timeout):
                reply: list[bytes] = await self._script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as error:
            self._failed(error)  # what was counted is dropped: replaying it later would be stale
            return
        self.syncs += 1
        self._last_ok = time.monotonic()
        self.active = True
        if self._stale_timer is not None:
            self._stale_timer.cancel()
        self._stale_timer = asyncio.get_running_loop().call_later(self.stale_after, self._went_stale)
        if self.down_since is not None:
            log.warning(
                "breakers: Redis at %s is reachable again after %.1fs; following the shared state",
                safe_url(self.url),
                time.time() - self.down_since,
            )
            self.down_since = None
        at = 0
        for breaker in self.breakers:
            at = breaker.apply(reply, at)

    def _failed(self, error: BaseException) -> None:
        self.active = False
        if self._stale_timer is not None:
            self._stale_timer.cancel()
        self.errors += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if self.down_since is None:
            self.down_since = time.time()
            self.outages += 1
            log.error(
                "breakers: Redis at %s is unreachable (%s); each replica now uses its own breakers",
                safe_url(self.url),
                self.last_error,
            )

    def status(self) -> dict[str, Any]:
        """Health of the sharing, for each shared breaker's status."""
        last = self._last_ok
        return {
            "url": safe_url(self.url),
            "healthy": self.active,
            "down_since": self.down_since,
            "last_error": self.last_error,
            "outages": self.outages,
            "errors": self.errors,
            "syncs": self.syncs,
            "last_sync_ago_s": None if last is None else round(time.monotonic() - last, 3),
            "staleness_bound_s": round(2 * self.interval, 3),
        }


class SharedBreakers:
    """Every ``BreakerSync`` of one router: one per Redis URL and key prefix."""

    def __init__(self, breakers: Iterable[Breaker]) -> None:
        groups: dict[tuple[str, str], list[SharedCircuitBreaker]] = {}
        for breaker in breakers:
            if isinstance(breaker, SharedCircuitBreaker) and breaker.config.shared is not None:
                groups.setdefault((breaker.config.shared, breaker.config.key_prefix), []).append(breaker)
        self.syncs = [
            BreakerSync(url, prefix, group, interval=min(b.config.sync_interval_seconds for b in group))
            for (url, prefix), group in groups.items()
        ]

    async def start(self) -> None:
        """Connect and start syncing (an unreachable Redis is an outage, not a failed start)."""
        for sync in self.syncs:
            await sync.start()

    async def close(self) -> None:
        """Stop syncing."""
        for sync in self.syncs:
            await sync.close()


def make_breaker(config: BreakerConfig, key: str) -> Breaker:
    """The breaker ``config`` asks for: shared through Redis, or per process."""
    if config.shared is not None and config.enabled:
        return SharedCircuitBreaker(config, key)
    return CircuitBreaker(config, label=key)
