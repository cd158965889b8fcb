"""Counters shared by every replica, in Redis, changed only by one atomic Lua script.

A script runs atomically in Redis, so two replicas reserving at once cannot both take the last unit.

**Coalescing.** Each replica sends one script call at a time. Reservations and settles that arrive
while a call is in flight wait and go together in the next call, in arrival order (a settle queued
before a reservation is applied before it). Under load one round trip serves many requests — the
Python Redis client costs ~150 µs of CPU per call, more than the rest of the stage — and at low
load nothing waits longer than one round trip. Within a call each reservation is still all or none.

All keys of one call go to one script, so Redis Cluster (keys in many hash slots) is not supported:
use a single Redis, or a primary with replicas.

A call that fails on a connection error is sent once more at once, on a new connection: a connection
closed while idle (a Redis restart or failover, Redis's ``timeout``, a NAT or balancer) is not an
outage. When Redis fails, calls raise ``CountersUnavailable`` and, for ``probe_interval`` seconds, fail at
once without touching the network (the caller's ``on_redis_error`` answers instead of a timeout
per request). An outage is logged once when it starts and once when it ends, and counted.

**Releases survive an outage.** Releasing a lease is idempotent (ZREM of a member that is gone does
nothing), so a release whose call failed is kept in a bounded queue and sent again, ahead of
everything else, in the first call that reaches Redis (a timer retries every ``probe_interval``
when no request comes). A reservation whose call failed after it may have reached Redis (a timeout,
a dropped connection) is undone the same way: its lease members are chosen here, not by Redis, so
they can be released without the reply. Counter amounts are not idempotent and are not replayed: a
lost settle or a lost reservation's estimate stays counted until its minute or day ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from opsgate.limits.checks import EPSILON, Adjustment, Admission, Check, Tally
from opsgate.limits.errors import CountersUnavailable

log = logging.getLogger("opsgate.limits")

# KEYS[1] is the marker (no expiry; ``MARKER_KEY``), ARGV[1] epsilon, ARGV[2] the marker's value to write
# when it is missing; then operations in order:
#   'R', now, checks, keys, then six fields per check: kind, limit, amount, share or expiry, ttl, member
#        (kind w(indow) takes two keys, current and previous bucket; t(otal) and l(ease) one each);
#   'S', steps, then two fields per step: 'a' and an amount to add if the counter still exists
#        (INCRBYFLOAT keeps its expiry), or 'r' and a lease member to remove; one key each;
#   'L', count, expiry, ttl, then count lease members to renew if still held; one key each.
# Returns the marker's value, then, per 'R' in order: admitted (1/0), refused check (0-based, -1), n, the
# used amount of the n checks read, then the current and previous bucket of the last check read (for
# Retry-After).
SCRIPT = """
local epsilon = tonumber(ARGV[1])
local marker = redis.call('GET', KEYS[1])
if not marker then
  marker = ARGV[2]
  redis.call('SET', KEYS[1], marker)
end
local a, k = 3, 2
local out = {marker}
while a <= #ARGV do
  if ARGV[a] == 'S' then
    local steps = tonumber(ARGV[a + 1])
    a = a + 2
    for i = 1, steps do
      if ARGV[a] == 'a' then
        if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('INCRBYFLOAT', KEYS[k], ARGV[a + 1]) end
      else
        redis.call('ZREM', KEYS[k], ARGV[a + 1])
      end
      a, k = a + 2, k + 1
    end
  elseif ARGV[a] == 'L' then
    local count, expires, ttl = tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
    a = a + 4
    for i = 1, count do
      if redis.call('ZSCORE', KEYS[k], ARGV[a]) then
        redis.call('ZADD', KEYS[k], 'XX', expires, ARGV[a])
        redis.call('EXPIRE', KEYS[k], ttl)
      end
      a, k = a + 1, k + 1
    end
  else
    local now, n, nkeys = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local first_a, first_k = a + 4, k
    local used_list, refused, cur, prev = {}, -1, 0, 0
    a = first_a
    for i = 0, n - 1 do
      local kind, used = ARGV[a], 0
      cur, prev = 0, 0
      if kind == 'w' then
        cur = tonumber(redis.call('GET', KEYS[k]) or '0')
        prev = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
        used = cur + prev * tonumber(ARGV[a + 3])
        k = k + 2
      elseif kind == 't' then
        cur = tonumber(redis.call('GET', KEYS[k]) or '0')
        used = cur
        k = k + 1
      else
        redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
        cur = redis.call('ZCARD', KEYS[k])
        used = cur
        k = k + 1
      end
      used_list[#used_list + 1] = tostring(used)
      if used + tonumber(ARGV[a + 2]) > tonumber(ARGV[a + 1]) + epsilon then
        refused = i
        break
      end
      a = a + 6
    end
    if refused < 0 then
      a, k = first_a, first_k
      for i = 0, n - 1 do
        local kind = ARGV[a]
        if kind == 'l' then
          redis.call('ZADD', KEYS[k], ARGV[a + 3], ARGV[a + 5])
        else
          redis.call('INCRBYFLOAT', KEYS[k], ARGV[a + 2])
        end
        redis.call('EXPIRE', KEYS[k], ARGV[a + 4])
        if kind == 'w' then k = k + 2 else k = k + 1 end
        a = a + 6
      end
    end
    out[#out + 1] = refused < 0 and '1' or '0'
    out[#out + 1] = tostring(refused)
    out[#out + 1] = tostring(#used_list)
    for _, used in ipairs(used_list) do out[#out + 1] = used end
    out[#out + 1] = tostring(cur)
    out[#out + 1] = tostring(prev)
    a, k = first_a + 6 * n, first_k + nkeys
  end
end
return out
"""

# Not on a timeout: the call may be running in Redis, and waiting twice is the outage's cost, not a cure.
# A connection error after the call was sent could in principle follow its execution (a connection cut
# between Redis's reply and ours): a replayed reservation then counts twice, an over-count (refusing early),
# never an admission uncounted. A connection Redis closed while idle never ran the call. The shared
# breakers use it as it is; the counters replay only calls with no settle amounts (``_Batch.replayable``).
RETRY_ONCE_ON_A_NEW_CONNECTION = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
NO_CLIENT_RETRY = Retry(NoBackoff(), 0)

_KIND = {"window": "w", "total": "t", "lease": "l"}
# Written under the prefix, without expiry, by the first call that finds it missing; its value is when
# (and by which process). Every call reads it in the script, so every replica sees it change: the
# counters it stood beside were lost (a restart without persistence, a flush, a failover to an empty
# replica). An LRU eviction of idle counters can leave it in place (every call touches it): the start
# warns when the Redis evicts (maxmemory with a policy other than noeviction).
MARKER_KEY = "counters-since"
LOST_SHOWN_SECONDS = 86400.0
_MAX_BATCH = 256  # operations per script call, so one call stays short inside Redis
_MAX_RELEASES = 10_000  # lease releases kept through an outage; past this the oldest lapse on their own
_RELEASES_PER_CALL = 1024


def _since(marker: bytes | None) -> float | None:
    """When the counters beside ``marker`` started (its value is ``<epoch seconds> <process token>``)."""
    try:
        return float(marker.split()[0]) if marker else None
    except ValueError:
        return None


def _since_text(marker: bytes | None) -> str:
    since = _since(marker)
    return "?" if since is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))


def safe_url(url: str) -> str:
    """The URL without its password, for logs and status."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(slots=True)
class _Reserve:
    checks: Sequence[Check]
    now: float
    done: asyncio.Future[Admission]


@dataclass(slots=True)
class _Settle:
    steps: Sequence[Adjustment]


@dataclass(slots=True)
class _Renew:
    leases: Sequence[tuple[str, str]]  # (key, member)
    expires: float
    ttl: int


class _Lost(CountersUnavailable):
    """The call failed after it may have reached Redis: what it reserved may be held there."""


@dataclass(slots=True)
class _Batch:
    keys: list[str] = field(default_factory=list)
    args: list[str | float] = field(default_factory=lambda: [repr(EPSILON)])
    # No settle amounts in it: sent again after a connection error, it can only over-count. A settle's
    # amount (a refund, an undo) applied twice would under-count: such a call is never replayed.
    replayable: bool = True


def _undo(checks: Sequence[Check]) -> list[Adjustment]:
    """Steps that take back a reservation nobody is waiting for any more."""
    return [Adjustment(c.key, member=c.member) if c.kind == "lease" else Adjustment(c.key, -c.amount) for c in checks]


class RedisCounters:
    """Counters in Redis under ``prefix``, shared by every gateway that uses the same prefix."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout: float = 0.5,
        probe_interval: float = 1.0,
        outage_note: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.probe_interval = probe_interval
        self.outage_note = outage_note
        self._client: aioredis.Redis | None = None
        self._script: Any = None
        self._queue: list[_Reserve | _Settle | _Renew] = []
        self._releases: dict[tuple[str, str], None] = {}  # (key, member), oldest first, to send again
        self._retry_timer: asyncio.TimerHandle | None = None
        self._sender: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self.down_since: float | None = None
        self.outages = 0
        self.errors = 0
        self.settle_failures = 0
        self.releases_retried = 0
        self.releases_dropped = 0
        self.calls = 0
        self.operations = 0
        self.last_error: str | None = None
        self.clock = clock
        self._marker_key = prefix + MARKER_KEY
        self._marker: bytes | None = None  # the marker's value as this process last saw it
        self._token = secrets.token_hex(4)
        self.counters_lost = 0
        self.counters_lost_at: float | None = None
        self.eviction_policy: str | None = None  # None: unknown, or the Redis has no maxmemory (never evicts)

    async def start(self) -> None:
        """Connect and register the script; an unreachable Redis starts an outage, not a crash."""
        self._client = aioredis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # redis-py retries ten times with backoff by default: seconds per request in an outage. ``_call``
            # retries once itself, on a new connection, for a connection error only (probe-g G1): a pooled
            # connection that Redis (a restart, its idle `timeout`) or a NAT closed is not an outage.
            retry=NO_CLIENT_RETRY,
            single_connection_client=True,  # one call in flight at a time, by design (see above)
        )
        self._script = self._client.register_script(SCRIPT)
        try:
            marker = await self._client.get(self._marker_key)  # None: the first call writes it
            self._marker = marker.encode() if isinstance(marker, str) else marker
        except (RedisError, OSError) as error:
            self._failed(error)
            return
        await self._check_eviction()

    async def _check_eviction(self) -> None:
        """Warn when this Redis evicts keys when full: counters would vanish, limits reset unnoticed."""
        assert self._client is not None
        try:
            memory = await self._client.info("memory")
        except (RedisError, OSError):  # INFO renamed or refused (some managed Redis): nothing to say
            return
        policy = str(memory.get("maxmemory_policy", ""))
        if int(memory.get("maxmemory", 0) or 0) > 0 and policy and policy != "noeviction":
            self.eviction_policy = policy
            log.warning(
                "limits: Redis at %s evicts keys when full (maxmemory-policy %s): rate-limit and budget counters "
                "can be evicted, and their limits then start again from zero unnoticed. Use maxmemory-policy "
                "noeviction, or a Redis of their own (docs/deploy.md)",
                safe_url(self.url),
                policy,
            )

    async def close(self) -> None:
        """Send what is queued (for up to five seconds), then close the connection."""
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        if self._sender is not None and not self._sender.done():
            await asyncio.wait([self._sender], timeout=5)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def healthy(self) -> bool:
        """Whether the last call reached Redis."""
        return self.down_since is None

    async def reserve(self, checks: Sequence[Check], now: float) -> Admission:
        """Reserve ``checks`` (all or none) in the next script call."""
        done: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        self._enqueue(_Reserve(checks, now, done))
        return await done

    def settle(self, adjustments: Sequence[Adjustment], now: float) -> None:
        """Queue ``adjustments`` for the next call, ahead of any later reservation; a failure is counted."""
        if not adjustments:
            return
        try:
            self._enqueue(_Settle(adjustments))
        except RuntimeError:  # no running loop (interpreter shutdown): leases lapse on their own
            self.settle_failures += 1

    def renew(self, leases: Sequence[tuple[str, str]], expires: float, ttl: int) -> None:
        """Move the expiry of the leases still held to ``expires`` (the limiter's heartbeat); best effort."""
        if leases:
            with contextlib.suppress(RuntimeError):  # no running loop: the leases lapse on their own
                self._enqueue(_Renew(leases, expires, ttl))

    async def flush(self) -> None:
        """Wait until everything queued so far has been sent (tests, shutdown)."""
        while self._sender is not None and not self._sender.done():
            await asyncio.wait([self._sender])

    def _enqueue(self, operation: _Reserve | _Settle | _Renew) -> None:
        self._queue.append(operation)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        """Send the queue, one script call at a time, until it is empty."""
        while self._queue or self._releases:
            batch: list[_Reserve | _Settle | _Renew]
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            retried = self._take_releases()
            if retried is not None:
                batch.insert(0, retried)  # first, so the slots are free for the reservations behind
            if not batch:
                break  # only releases, and Redis is between probes: the retry timer comes back
            try:
                reply = await self._call(self._pack(batch))
            except CountersUnavailable as error:
                self._failed_batch(batch, error)
                continue
            self.operations += len(batch)
            self._saw_marker(reply[0])
            self._unpack(batch, reply)

    def _take_releases(self) -> _Settle | None:
        """Up to ``_RELEASES_PER_CALL`` kept releases, unless the next call would fail without trying."""
        if not self._releases or (self.down_since is not None and time.monotonic() < self._retry_at):
            return None
        taken = list(itertools.islice(self._releases, _RELEASES_PER_CALL))
        for item in taken:
            del self._releases[item]
        self.releases_retried += len(taken)
        return _Settle([Adjustment(key, member=member) for key, member in taken])

    def _keep_release(self, key: str, member: str) -> None:
        self._releases[(key, member)] = None
        if len(self._releases) > _MAX_RELEASES:
            del self._releases[next(iter(self._releases))]
            self.releases_dropped += 1

    def _failed_batch(self, batch: list[_Reserve | _Settle | _Renew], error: CountersUnavailable) -> None:
        """Keep the releases of a failed call (and undo its reservations if it may have reached Redis)."""
        for operation in batch:
            if isinstance(operation, _Settle):
                amounts = 0
                for step in operation.steps:
                    if step.member is not None:
                        self._keep_release(step.key, step.member)
                    else:
                        amounts += 1
                if amounts:
                    self.settle_failures += 1  # not idempotent, so not replayed (module docstring)
            elif isinstance(operation, _Reserve):
                if isinstance(error, _Lost):
                    for check in operation.checks:
                        if check.kind == "lease":
                            self._keep_release(check.key, check.member)
                if not operation.done.done():
                    operation.done.set_exception(error)
        if self._releases and self._retry_timer is None:
            loop = asyncio.get_running_loop()
            self._retry_timer = loop.call_later(max(self.probe_interval, 0.05), self._retry_releases)

    def _retry_releases(self) -> None:
        self._retry_timer = None
        if self._releases and self._client is not None and (self._sender is None or self._sender.done()):
            self._sender = asyncio.get_running_loop().create_task(self._send())

    def _saw_marker(self, marker: bytes) -> None:
        """Note the marker a call read; a new one means the counters beside the old one were lost."""
        if marker == self._marker:
            return
        before, self._marker = self._marker, marker
        if before is None:  # never seen here: this process's first call, on a fresh Redis or prefix
            log.info("limits: counting in Redis at %s since %s", safe_url(self.url), _since_text(marker))
            return
        self.counters_lost += 1
        self.counters_lost_at = self.clock()
        log.error(
            "limits: the counters in Redis at %s were lost: their marker %r (no expiry, counting since %s) is gone "
            "(Redis restarted without persistence, was flushed, or failed over to an empty replica). Rate limits "
            "and spend budgets started again from zero at %s. Give the limits Redis persistence (AOF or RDB) and "
            "maxmemory-policy noeviction (docs/deploy.md)",
            safe_url(self.url),
            self._marker_key,
            _since_text(before),
            _since_text(marker),
        )

    def _lost_recently(self) -> bool:
        return self.counters_lost_at is not None and self.clock() - self.counters_lost_at < LOST_SHOWN_SECONDS

    def _pack(self, batch: list[_Reserve | _Settle | _Renew]) -> _Batch:
        out = _Batch(keys=[self._marker_key], args=[repr(EPSILON), f"{self.clock():.3f} {self._token}"])
        for operation in batch:
            if isinstance(operation, _Renew):
                out.args += ["L", len(operation.leases), repr(operation.expires), operation.ttl]
                for key, member in operation.leases:
                    out.keys.append(self.prefix + key)
                    out.args.append(member)
                continue
            if isinstance(operation, _Settle):
                out.args += ["S", len(operation.steps)]
                out.replayable = out.replayable and all(step.member is not None for step in operation.steps)
                for step in operation.steps:
                    out.keys.append(self.prefix + step.key)
                    out.args += ["a", repr(step.amount)] if step.member is None else ["r", step.member]
                continue
            keys_before = len(out.keys)
            fields: list[str | float] = []
            for check in operation.checks:
                out.keys.append(self.prefix + check.key)
                if check.kind == "window":
                    out.keys.append(self.prefix + (check.prev_key or check.key))
                third = check.prev_share if check.kind == "window" else check.expires
                fields += [_KIND[check.kind], repr(check.limit), repr(check.amount), repr(third), check.ttl]
                fields.append(check.member)
            out.args += ["R", repr(operation.now), len(operation.checks), len(out.keys) - keys_before, *fields]
        return out

    def _unpack(self, batch: list[_Reserve | _Settle | _Renew], reply: list[bytes]) -> None:
        at = 1  # after the marker
        for operation in batch:
            if not isinstance(operation, _Reserve):
                continue
            admitted, refused, count = reply[at] == b"1", int(reply[at + 1]), int(reply[at + 2])
            used = [float(v) for v in reply[at + 3 : at + 3 + count]]
            current, previous = float(reply[at + 3 + count]), float(reply[at + 4 + count])
            at += 5 + count
            tallies = [Tally(u) for u in used]
            if not admitted:
                tallies[-1] = Tally(used[-1], current, previous)
            if operation.done.done():  # the request was cancelled meanwhile: give back what it got
                if admitted:
                    self._enqueue(_Settle(_undo(operation.checks)))
                continue
            operation.done.set_result(Admission(tallies, refused=None if admitted else refused))

    async def _call(self, batch: _Batch) -> list[bytes]:
        if self._client is None:
            raise CountersUnavailable("the limits store was not started")
        if self.down_since is not None:
            now = time.monotonic()
            if now < self._retry_at:
                raise CountersUnavailable(self.last_error or "Redis is unreachable")
            self._retry_at = now + self.probe_interval  # this call is the probe
        try:
            reply: list[bytes] = await self._run(batch)
        except (RedisError, OSError) as error:
            self._failed(error)
            raise _Lost(self.last_error or str(error)) from error
        self.calls += 1
        if self.down_since is not None:
            log.warning(
                "limits: Redis at %s is reachable again after %.1fs", safe_url(self.url), time.time() - self.down_since
            )
            self.down_since = None
        return reply

    async def _run(self, batch: _Batch) -> list[bytes]:
        """The script call; once more on a new connection after a connection error, if it can be replayed."""
        try:
            return await self._script(keys=batch.keys, args=batch.args)  # type: ignore[no-any-return]
        except RedisConnectionError:
            if not batch.replayable:
                raise
            return await self._script(keys=batch.keys, args=batch.args)  # type: ignore[no-any-return]

    def _failed(self, error: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(error).__name__}: {error}"
        self._retry_at = time.monotonic() + self.probe_interval
        if self.down_since is None:
            self.down_since = time.time()
            self.outages += 1
            where = safe_url(self.url)
            log.error("limits: Redis at %s is unreachable (%s); %s", where, self.last_error, self.outage_note)

    async def read(self, key: str, now: float) -> float:
        """A counter's value, or the number of live leases (tests and debugging)."""
        assert self._client is not None
        full = self.prefix + key
        if await self._client.type(full) == b"zset":
            return float(await self._client.zcount(full, now, "+inf"))
        value = await self._client.get(full)
        return float(value) if value is not None else 0.0

    def status(self) -> dict[str, Any]:
        """Health, outage counts and how well calls are shared, for /readyz and metrics."""
        return {
            "backend": self.backend,
            "scope": "shared",
            "url": safe_url(self.url),
            "healthy": self.healthy,
            "down_since": self.down_since,
            "outages": self.outages,
            "errors": self.errors,
            "last_error": self.last_error,
            "settle_failures": self.settle_failures,
            # Degraded (public /readyz: components.limits) for a day after counters were lost, the span of
            # the daily budgets they reset, and while the Redis evicts keys when full. Still serving.
            "state": "degraded" if self._lost_recently() or self.eviction_policy else "ok",
            # Counters lost (the marker changed under this replica): how often, and when last.
            "counters_lost": self.counters_lost,
            "counters_lost_at": self.counters_lost_at,
            "counting_since": _since(self._marker),
            "eviction_policy": self.eviction_policy,
            "releases_pending": len(self._releases),
            "releases_retried": self.releases_retried,
            "releases_dropped": self.releases_dropped,
            "queued": len(self._queue),
            "calls": self.calls,
            "operations_per_call": round(self.operations / self.calls, 2) if self.calls else None,
        }
