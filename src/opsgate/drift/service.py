"""The drift monitor as a gateway background service: the collector's sink plus a scheduled checker.

Every replica collects (its own rows); one replica at a time checks, holding the ``drift_leader``
lease (renewed each tick, lapsing after three intervals), so a round's results and SLO
measurements are written once. Store trouble is logged and retried at the next tick: drift
monitoring never takes the gateway down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from opsgate.domain.config import GatewayConfig
from opsgate.drift.checker import DriftChecker, scope_name
from opsgate.drift.collector import DriftCollector, Embedder
from opsgate.drift.engine import DriftResult
from opsgate.drift.windows import WindowStore
from opsgate.pipeline.record import RecordSink

if TYPE_CHECKING:
    from opsgate.server.services import BackgroundService, StoreOpener

log = logging.getLogger("opsgate.drift.monitor")
PRUNE_EVERY = 3600.0


class DriftMonitor:
    """Collects summaries on every replica; checks on the lease holder, every ``drift.interval``."""

    name = "drift"

    def __init__(self, config: GatewayConfig, store: StoreOpener, *, embedder: Embedder | None = None) -> None:
        self.config = config
        self.drift = config.drift
        self.windows = WindowStore(store)
        self._gateway: Any = None  # set by attach_app: a config reload's aliases are seen at once
        self._known: tuple[GatewayConfig, frozenset[str]] = (config, configured_aliases(config))
        self.checker = DriftChecker(config, store, aliases=self.known_aliases)
        self.collector = DriftCollector(self.drift, self.windows, embedder=embedder, aliases=self.known_aliases)
        self.holder = self.collector.replica
        self._task: asyncio.Task[None] | None = None
        self._leading = False
        self._last_prune = 0.0
        self.last_check: float | None = None
        self.last_error: str | None = None
        self.rounds = 0
        self.checks = 0
        self.alarms = 0

    @property
    def sink(self) -> RecordSink | None:
        """The collector: enqueues each finished record, never blocks."""
        return self.collector

    def attach_app(self, app: Any) -> None:
        """Follow the gateway's config, so aliases a reload adds are monitored (and removed ones not)."""
        self._gateway = getattr(getattr(app, "state", None), "gateway", None)

    def known_aliases(self) -> frozenset[str]:
        """The model aliases configured now (cached per config object: called for every record)."""
        current = getattr(self._gateway, "config", None)
        if not isinstance(current, GatewayConfig):
            current = self.config
        if self._known[0] is not current:
            self._known = (current, configured_aliases(current))
        return self._known[1]

    async def start(self) -> None:
        """Start collecting and the check loop."""
        self.collector.start()
        self._task = asyncio.create_task(self._loop(), name="drift-monitor")

    async def stop(self) -> None:
        """Stop the loop, give the lease up, flush the collector."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.collector.stop)
        if self._leading:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.windows.release, self.holder)

    async def _loop(self) -> None:
        interval = self.drift.interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.tick)
            except Exception as error:
                self.last_error = f"{type(error).__name__}: {error}"[:300]
                log.exception("drift: check round failed")

    def tick(self, now: float | None = None) -> list[DriftResult]:
        """One round if this replica holds the lease: check every scope, store, measure, prune."""
        now = time.time() if now is None else now
        self._leading = self.windows.try_lead(self.holder, 3 * self.drift.interval_seconds, now)
        if not self._leading:
            return []
        self.collector.flush(now=now)  # the leader's own latest counts go into its check
        results = self.checker.check_all(now)
        self.rounds += 1
        self.checks += len(results)
        self.alarms += sum(1 for r in results if r["drifted"])
        self.last_check = now
        failed = [r for r in results if r.get("error")]
        self.last_error = (
            "; ".join(f"{scope_name(r['alias'], r['tenant'])}: {r['error']}" for r in failed)[:300] or None
        )
        if now - self._last_prune > PRUNE_EVERY:
            self.checker.prune(now)
            self._last_prune = now
        return results

    def check_now(self, alias: str, tenant: str | None, **spans: Any) -> DriftResult:
        """An on-demand check (admin API), stored and measured like scheduled ones."""
        self.collector.flush()
        result = self.checker.check(alias, tenant, **spans)
        self.checks += 1
        self.last_check = result["checked_at"]
        return result

    def status(self) -> dict[str, Any]:
        """For /readyz: last check, the collector's counts, who holds the lease."""
        return {
            "enabled": True,
            "leading": self._leading,
            "holder": self.holder,
            "last_check": self.last_check,
            "rounds": self.rounds,
            "checks": self.checks,
            "alarms": self.alarms,
            "last_error": self.last_error,
            "collector": self.collector.status(),
        }


def configured_aliases(config: GatewayConfig) -> frozenset[str]:
    """The names of ``config``'s model aliases: the only aliases drift summarises and checks."""
    return frozenset(alias.name for alias in config.models)


def build_drift_monitor(config: GatewayConfig, store: StoreOpener | None) -> BackgroundService | None:
    """The drift monitor for ``config``, or None when drift monitoring is off or there is no store."""
    if not config.drift.enabled or store is None:
        return None
    return DriftMonitor(config, store)
