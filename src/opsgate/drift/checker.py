"""Runs drift checks over stored windows: picks the windows, merges their buckets, tests, stores, feeds SLOs.

Windows are whole buckets. The current window ends with the bucket holding ``now`` (what was
flushed of it); a trailing reference is the window just before it; a fixed one is a baseline pinned
through the admin API, else the config's ``reference.start``/``end``. Blocking; call from a thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from opsgate.domain.config import GatewayConfig
from opsgate.domain.drift_config import DriftConfig
from opsgate.domain.slo_config import duration_seconds
from opsgate.drift.engine import DriftResult, Span, headline, run_check
from opsgate.drift.history import DriftHistory
from opsgate.drift.windows import NO_TENANT, WindowStore
from opsgate.slo.reader import RollupReader, StoreSource

log = logging.getLogger("opsgate.drift.monitor")
MAX_WINDOW_SECONDS = 400 * 86400  # an override longer than this is a client mistake


class WindowError(ValueError):
    """Windows that cannot be checked (empty, reversed, overlapping, too long, no baseline)."""


@dataclass(frozen=True)
class Windows:
    """The two spans of a check and the reference's kind."""

    reference: Span
    current: Span
    kind: str


def _floor(ts: float, bucket: int) -> int:
    return math.floor(ts / bucket) * bucket


def choose_windows(
    config: DriftConfig,
    now: float,
    *,
    current: Span | None = None,
    reference: Span | None = None,
    baseline: tuple[float, float] | None = None,
) -> Windows:
    """The spans to compare: explicit ones win, then a pinned baseline, then the config."""
    bucket = config.bucket_seconds
    if current is None:
        end = _floor(now, bucket) + bucket
        length = math.ceil(config.current_seconds / bucket) * bucket
        current = Span(end - length, end)
    kind = "fixed"
    if reference is None:
        if baseline is not None:
            reference = Span(*baseline)
        elif config.reference.kind == "fixed":
            assert config.reference.start is not None and config.reference.end is not None
            reference = Span(config.reference.start, config.reference.end)
        else:
            kind = "trailing"
            length = math.ceil(duration_seconds(config.reference.window) / bucket) * bucket
            end = _floor(current.start, bucket)
            reference = Span(end - length, end)
    for name, span in (("current", current), ("reference", reference)):
        if not (math.isfinite(span.start) and math.isfinite(span.end)) or span.end <= span.start:
            raise WindowError(f"the {name} window must end after it starts")
        if span.end - span.start > MAX_WINDOW_SECONDS:
            raise WindowError(f"the {name} window is longer than {MAX_WINDOW_SECONDS // 86400} days")
    if reference.start < current.end and current.start < reference.end:
        raise WindowError("the reference and current windows overlap")
    return Windows(reference, current, kind)


def validate_baseline(config: DriftConfig, start: float, end: float, now: float) -> None:
    """Raise ``WindowError`` unless ``start``..``end`` can be the reference of this scope's checks now:
    the rules ``choose_windows`` applies to it, and wholly before the current window (a baseline in the
    future would only start overlapping it later). The admin API checks a baseline with this at PUT."""
    windows = choose_windows(config, now, baseline=(start, end))
    if end > windows.current.start:
        raise WindowError("the baseline must end before the current window starts (not in the future)")


def failed_result(alias: str, tenant: str | None, error: Exception, now: float) -> DriftResult:
    """The stored result of a scope whose check raised: it names the scope and the error, decides nothing
    (``insufficient``, so reports and SLO measurements pass it over) and keeps the round going."""
    message = f"{type(error).__name__}: {error}"[:300]
    result: DriftResult = {
        "alias": alias,
        "tenant": tenant,
        "checked_at": now,
        "error": message,
        "drifted": False,
        "score": 0.0,
        "insufficient": f"check failed: {message}",
        "tests": [],
    }
    result["headline"] = headline(result)
    return result


def scope_name(alias: str, tenant: str | None) -> str:
    """``alias`` or ``alias (tenant t)``: how an error names the scope it happened in."""
    return alias if tenant is None else f"{alias} (tenant {tenant})"


def matching_objectives(config: GatewayConfig, alias: str, tenant: str | None) -> list[Any]:
    """The ``sli: drift`` objectives whose filter covers this alias and tenant scope."""
    return [
        o
        for o in config.slo.objectives
        if o.sli == "drift" and o.filter.model in (None, alias) and o.filter.tenant == tenant
    ]


class DriftChecker:
    """Check one scope now, store the result, write the SLO measurements."""

    def __init__(
        self, config: GatewayConfig, source: StoreSource, *, aliases: Callable[[], Collection[str]] | None = None
    ) -> None:
        """``aliases``: the configured model aliases now (default: ``config.models``); only they are checked."""
        self.config = config
        self.aliases = aliases or (lambda: {alias.name for alias in config.models})
        self.drift = config.drift
        self.windows = WindowStore(source)
        self.history = DriftHistory(source)
        self.measurements = RollupReader(source)

    def check(
        self,
        alias: str,
        tenant: str | None = None,
        *,
        now: float | None = None,
        current: Span | None = None,
        reference: Span | None = None,
        store: bool = True,
    ) -> DriftResult:
        """Run one check of ``alias`` (``tenant`` None: every tenant together). Callers taking the alias
        from a client check it is configured first (``is_configured``): this runs on any name."""
        now = time.time() if now is None else now
        baseline = None if reference is not None else self.windows.baseline(alias, tenant or NO_TENANT)
        spans = choose_windows(self.drift, now, current=current, reference=reference, baseline=baseline)
        capacity = self.drift.test_embeddings
        ref, _ = self.windows.read(alias, tenant, int(spans.reference.start), int(spans.reference.end), capacity)
        cur, _ = self.windows.read(alias, tenant, int(spans.current.start), int(spans.current.end), capacity)
        result = run_check(self.drift, alias, tenant, ref, cur, spans.reference, spans.current, spans.kind, now)
        result["headline"] = headline(result)
        if store:
            result["id"] = self.history.add(result)
            self.measure([result], now)
        return result

    def is_configured(self, alias: str) -> bool:
        """Whether ``alias`` is a configured model alias (a check of anything else is a client mistake)."""
        return alias in self.aliases()

    def scopes(self, now: float) -> list[tuple[str, str | None]]:
        """The (alias, tenant) scopes to check: every alias with recent buckets (or the configured ones),
        and each tenant of it when ``per_tenant``."""
        since = int(now - self.drift.current_seconds - 2 * self.drift.bucket_seconds)
        seen = self.windows.scopes(since)
        known = self.aliases()  # rows of an alias no longer (or never) configured are not checked
        aliases = sorted({alias for alias, _ in seen if alias in known})
        if self.drift.aliases is not None:
            aliases = [a for a in aliases if a in self.drift.aliases]
        out: list[tuple[str, str | None]] = [(alias, None) for alias in aliases]
        if self.drift.per_tenant:
            out += [(alias, tenant) for alias, tenant in seen if alias in aliases and tenant != NO_TENANT]
        return out

    def check_all(self, now: float | None = None) -> list[DriftResult]:
        """One round: check every scope, store each result, then feed the drift objectives. A scope whose
        check raises (a baseline gone bad, a corrupt row) gets a failed result naming it; the others go on."""
        now = time.time() if now is None else now
        results = []
        for alias, tenant in self.scopes(now):
            try:
                results.append(self.check(alias, tenant, now=now, store=False))
            except Exception as error:  # one scope's failure must not stop every tenant's round
                name = scope_name(alias, tenant)
                log.warning("drift: check of %s failed: %s", name, error, exc_info=not isinstance(error, WindowError))
                results.append(failed_result(alias, tenant, error, now))
        for result in results:
            result["id"] = self.history.add(result)
        self.measure(results, now)
        return results

    def measure(self, results: list[DriftResult], now: float) -> int:
        """One measurement per ``sli: drift`` objective covering any of ``results``: 1.0 if any alarmed."""
        written = 0
        for objective in [o for o in self.config.slo.objectives if o.sli == "drift"]:
            covered = [
                r
                for r in results
                if objective in matching_objectives(self.config, r["alias"], r["tenant"]) and not r.get("insufficient")
            ]
            if covered:
                value = 1.0 if any(r["drifted"] for r in covered) else 0.0
                self.measurements.add_measurement(objective.name, now, value, objective.filter.tenant)
                written += 1
        return written

    def prune(self, now: float) -> int:
        """Delete summaries and results past ``retention_days``."""
        before = now - self.drift.retention_days * 86400
        return self.windows.prune(before) + self.history.prune(before)
