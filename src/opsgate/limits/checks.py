"""What one request asks of the limits: which counters, how much, against which limit.

Both counter stores (this process, Redis) evaluate the same ``Check`` list with the same rules, so
the arithmetic lives here once:

- ``window`` (requests and tokens per minute): a sliding window made of fixed one-minute buckets.
  ``used = current + previous * share`` where ``share`` is the part of the previous minute still
  inside the 60-second window. It has no burst of twice the limit at a minute boundary, and costs
  two keys per counter.
- ``total`` (spend per day / month): one counter per UTC calendar day or month.
- ``lease`` (concurrent requests): one entry per request in flight, with an expiry, so a replica
  that dies holding requests cannot block a user forever.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from opsgate.domain.reliability_config import LimitRule

Metric = Literal["requests_per_minute", "tokens_per_minute", "concurrent", "spend_per_day", "spend_per_month"]
Kind = Literal["window", "total", "lease"]

# A check passes while used + amount <= limit; the slack absorbs float noise in summed costs.
EPSILON = 1e-9
WINDOW_TTL = 180  # a minute bucket is read as "previous" for one more minute, and settled a little later
PERIOD_GRACE = 2 * 86400  # day and month counters outlive their period, for late settles and for reading
# Rules whose counter every caller shares (the others count a key, or users within a tenant).
SHARED_PER = frozenset({"model", "global"})
_SHORT = {
    "requests_per_minute": "rpm",
    "tokens_per_minute": "tpm",
    "concurrent": "conc",
    "spend_per_day": "day",
    "spend_per_month": "month",
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: the API key id, the end user (None: the request names none), the model alias, and
    the key's tenant (None: an operator key, or auth off)."""

    key: str
    user: str | None
    model: str
    tenant: str | None = None

    def scope(self, rule: LimitRule) -> tuple[str, str]:
        """The counting key for ``rule.per`` and how a message names it (``user alice on model gpt``).

        The client-chosen value (user) comes last in a key, so no value can forge another key's layout.
        Per-user rules: a named user is counted within its tenant (tenant A's ``alice`` is not tenant
        B's; the tenant goes with its length, so no tenant name can pose as another's), and operator keys
        and auth off count named users without a tenant (``user=alice``). A request naming no user is
        its API key's own (``nouser=<key>``), not one bucket shared by every client of every tenant.
        """
        on = f" on model {rule.model}" if rule.model else ""
        match rule.per:
            case "user" | "user+model":
                user, tenant = self.user, self.tenant
                if user is None:
                    counted, said = f"nouser={self.key}", f"requests without a user on key {self.key}"
                elif tenant is None:
                    counted, said = f"user={user}", f"user {user}"
                else:
                    counted, said = f"tenant={len(tenant)}:{tenant}|user={user}", f"user {user}"
                if rule.per == "user":
                    return counted, said + on
                return f"model={self.model}|{counted}", f"{said} on model {self.model}"
            case "key":
                return f"key={self.key}", f"key {self.key}{on}"
            case "model":
                return f"model={self.model}", f"model {self.model}"
            case "key+model":
                return f"model={self.model}|key={self.key}", f"key {self.key} on model {self.model}"
            case _:
                return "all", f"all requests{on}"


@dataclass(slots=True)
class Check:
    """One counter to test and, if every check of the request passes, to add ``amount`` to."""

    metric: Metric
    kind: Kind
    key: str
    limit: float
    amount: float
    scope: str  # for messages: "user alice"
    resets_in: float  # seconds until the current minute / day / month ends
    ttl: int  # seconds the counter must live after this write
    prev_key: str | None = None  # window: the previous minute's bucket
    prev_share: float = 0.0  # window: the share of the previous minute still inside the window
    member: str = ""  # lease: this request's entry
    expires: float = 0.0  # lease: when the entry lapses if never released
    # Counted for every caller alike (``per: model`` or ``global``): its count is other tenants' traffic,
    # so it never shows in a caller's x-ratelimit-* headers or in a refusal's message.
    shared: bool = False

    @property
    def code(self) -> str:
        """The error code a refusal carries."""
        return "budget_exceeded" if self.metric.startswith("spend") else "rate_limit_exceeded"

    def too_large(self) -> bool:
        """Whether this request alone needs more than the whole limit (it can never pass)."""
        return self.amount > self.limit + EPSILON


@dataclass(slots=True)
class Tally:
    """What a store read for one check before this request: the used amount and its parts."""

    used: float
    current: float = 0.0
    previous: float = 0.0


@dataclass(slots=True)
class Admission:
    """A store's answer: admitted (every check reserved) or the index of the first check that refused."""

    tallies: list[Tally]
    refused: int | None = None

    @property
    def admitted(self) -> bool:
        """Whether everything was reserved."""
        return self.refused is None


@dataclass(slots=True)
class Adjustment:
    """A settle step: add ``amount`` to ``key`` if it still exists, or release lease ``member`` of ``key``."""

    key: str
    amount: float = 0.0
    member: str | None = None


def exceeds(used: float, amount: float, limit: float) -> bool:
    """The one comparison both stores make (the Lua script repeats it)."""
    return used + amount > limit + EPSILON


@dataclass(slots=True)
class Demand:
    """The estimate a request reserves: ``tokens`` and ``cost`` (None: no price known, spend not counted)."""

    tokens: int
    cost: float | None


@functools.lru_cache(maxsize=4)
def _calendar(minute: int) -> tuple[str, float, str, float]:
    """The UTC day and month a minute falls in, and when each ends (computed once a minute)."""
    utc = dt.datetime.fromtimestamp(minute * 60, dt.UTC)
    day_end = dt.datetime(utc.year, utc.month, utc.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    month_end = dt.datetime(utc.year + utc.month // 12, utc.month % 12 + 1, 1, tzinfo=dt.UTC)
    return f"{utc:%Y-%m-%d}", day_end.timestamp(), f"{utc:%Y-%m}", month_end.timestamp()


@dataclass(slots=True)
class _Periods:
    """The minute bucket, UTC day and UTC month that ``now`` falls in, and how long each has left."""

    minute: int
    into_minute: float
    day: str
    day_left: float
    month: str
    month_left: float

    @classmethod
    def at(cls, now: float) -> _Periods:
        minute = int(now // 60)
        day, day_end, month, month_end = _calendar(minute)
        return cls(minute, now - minute * 60, day, day_end - now, month, month_end - now)


def _window(metric: Metric, base: str, limit: int, amount: float, said: str, at: _Periods) -> Check:
    return Check(
        metric,
        "window",
        f"{_SHORT[metric]}:{base}:{at.minute}",
        float(limit),
        amount,
        said,
        resets_in=60.0 - at.into_minute,
        ttl=WINDOW_TTL,
        prev_key=f"{_SHORT[metric]}:{base}:{at.minute - 1}",
        prev_share=1.0 - at.into_minute / 60.0,
    )


def _total(metric: Metric, base: str, limit: float, cost: float, said: str, bucket: str, left: float) -> Check:
    return Check(
        metric,
        "total",
        f"{_SHORT[metric]}:{base}:{bucket}",
        limit,
        cost,
        said,
        resets_in=left,
        ttl=math.ceil(left) + PERIOD_GRACE,
    )


def plan(
    rules: Sequence[LimitRule],
    rule_ids: Sequence[str],
    who: Identity,
    demand: Demand,
    now: float,
    member: str,
    lease_seconds: float,
) -> list[Check]:
    """The checks of every rule that applies to ``who``, in rule order.

    Counter keys read ``{metric}:{rule id}:{scope}[:{bucket}]``, e.g. ``tpm:user@*:user=alice:29123456``.
    """
    at = _Periods.at(now)
    checks: list[Check] = []
    for rule, rule_id in zip(rules, rule_ids, strict=True):
        if rule.model is not None and rule.model != who.model:
            continue
        counted, said = who.scope(rule)
        base = f"{rule_id}:{counted}"
        first = len(checks)
        if rule.requests_per_minute:
            checks.append(_window("requests_per_minute", base, rule.requests_per_minute, 1.0, said, at))
        if rule.tokens_per_minute:
            checks.append(_window("tokens_per_minute", base, rule.tokens_per_minute, demand.tokens, said, at))
        if rule.concurrent:
            checks.append(
                Check(
                    "concurrent",
                    "lease",
                    f"conc:{base}",
                    float(rule.concurrent),
                    1.0,
                    said,
                    resets_in=1.0,
                    ttl=math.ceil(lease_seconds) + 1,
                    member=member,
                    expires=now + lease_seconds,
                )
            )
        if demand.cost is not None:
            if rule.spend_per_day:
                checks.append(_total("spend_per_day", base, rule.spend_per_day, demand.cost, said, at.day, at.day_left))
            if rule.spend_per_month:
                checks.append(
                    _total("spend_per_month", base, rule.spend_per_month, demand.cost, said, at.month, at.month_left)
                )
        if rule.per in SHARED_PER:
            for check in checks[first:]:
                check.shared = True
    return checks


def rule_ids(rules: Sequence[LimitRule]) -> list[str]:
    """Stable counter names per rule: what it counts by and which model it covers, not its position.

    Reordering rules or changing a limit keeps the counts (raising a monthly budget mid-month keeps
    the month's spend); two rules with the same ``per`` and ``model`` get ``#2``, ``#3``….
    """
    seen: dict[str, int] = {}
    out = []
    for rule in rules:
        name = f"{rule.per}@{rule.model or '*'}"
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def retry_after(check: Check, tally: Tally) -> float:
    """Seconds until ``check`` would pass, if nothing else is reserved meanwhile."""
    if check.kind == "lease":
        return 1.0  # we cannot know when a request in flight ends
    if check.kind == "total":
        return check.resets_in
    room = check.limit - check.amount  # what may be used by others for this request to fit
    if tally.current <= room + EPSILON:
        # The current minute alone fits: wait for enough of the previous minute to slide out.
        if tally.previous <= 0:
            return 1.0
        share_needed = max(0.0, (room - tally.current) / tally.previous)
        return max(0.0, (check.prev_share - share_needed) * 60.0)
    # Even the current minute is too full: it becomes the previous one, then slides out.
    share_needed = max(0.0, room / tally.current) if tally.current > 0 else 1.0
    return check.resets_in + (1.0 - share_needed) * 60.0


def amount_text(metric: Metric, value: float) -> str:
    """A count as an integer where it is one, spend with up to six decimals."""
    if metric.startswith("spend"):
        return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
    if abs(value - round(value)) < 0.05:
        return str(round(value))
    return f"{value:.1f}"


def duration_text(seconds: float) -> str:
    """``12s``, ``3m5s``, ``5h12m``, ``3d4h``."""
    whole = max(1, math.ceil(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
