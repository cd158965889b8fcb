"""The behaviour-change sentinel as a gateway background service (issue 15).

Every few seconds the service tries to take (or renew) the schedule's lease in the record store
(``sentinel_lease``, like ``slo/alerts.py``): only its holder runs the schedule, and the next run's
time lives in the same row, so a replica that takes over continues the schedule. When a sweep is
due, each watched deployment of each alias is run in turn (``drift/sentinel_runner.py``) through
the app's own ``/v1``, in-process. Manual runs (``POST /admin/sentinel/run``) do not need the lease;
one run at a time per process.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from opsgate.domain.config import GatewayConfig
from opsgate.drift.sentinel_runner import Embedder, SentinelRunner, watched
from opsgate.drift.sentinel_store import SentinelStore
from opsgate.store.finished_thread import finished_in_thread

if TYPE_CHECKING:
    from opsgate.server.services import BackgroundService, StoreOpener

log = logging.getLogger("opsgate.sentinel")
READY_WAIT_SECONDS = 300.0  # embedded models load in the background: calls before would fail


class SentinelBusy(Exception):
    """A run is already in progress in this process."""


class SentinelService:
    """Golden prompts on a schedule; manual runs and re-baselines for the admin API."""

    name = "sentinel"
    sink = None  # it reads no live traffic

    def __init__(self, config: GatewayConfig, opener: StoreOpener, rng: random.Random | None = None) -> None:
        self.config = config
        self.settings = config.sentinel
        self._opener = opener
        self.rng = rng or random.Random()
        self.holder = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.embedder = Embedder(self.settings.embedding_model)
        self.app: Any = None
        self.poster: Any = None
        self.lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.tick_seconds = min(5.0, self.settings.lease_seconds / 3)
        self.leader = False
        self.running = False
        self.next_run: float | None = None
        self.last_run: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.counts = {"sweeps": 0, "runs": 0, "changes_seen": 0, "failed_runs": 0}
        self.aliases = watched(config)
        missing = sorted(set(self.settings.models) - set(self.aliases))
        if missing:
            log.warning(
                "sentinel.models names aliases that do not exist or are not chat models: %s", ", ".join(missing)
            )

    @property
    def store(self) -> SentinelStore:
        """The sentinel tables of the record store."""
        return SentinelStore(self._opener())

    # -- the seam ---------------------------------------------------------------------------------

    def attach_app(self, app: Any) -> None:
        """Golden prompts go to ``app``'s own ``/v1`` in-process, with the sentinel's key when auth is on."""
        from opsgate.evals.client import AsgiPoster

        key = self.settings.api_key or (self.config.auth.admin_key if self.config.auth.enabled else None)
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}
        self.app = app
        self.poster = AsgiPoster(app, headers, ("127.0.0.1", 50002))

    async def start(self) -> None:
        """Start the schedule."""
        self._task = asyncio.create_task(self._schedule(), name="opsgate-sentinel")

    async def stop(self) -> None:
        """Stop the schedule and give the lease up."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.leader:
            try:
                await finished_in_thread(self.store.release, self.holder)
            except Exception as error:  # the store may already be gone at shutdown
                log.info("sentinel: could not release the lease: %s", error)
            self.leader = False

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` (no store access: cached by the schedule)."""
        return {
            "enabled": True,
            "aliases": {alias: labels for alias, labels in self.aliases.items()},
            "running": self.running,
            "last_run": self.last_run,
            "next_run": self.next_run,
            **self.counts,
            "lease": {"holder": self.holder, "leader": self.leader},
            "last_error": self.last_error,
        }

    # -- runs -------------------------------------------------------------------------------------

    async def run_now(
        self, alias: str | None = None, deployment: str | None = None, actor: str = "sentinel",
        rebaseline: bool = False, kind: str = "manual",
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Run (or re-baseline) the watched deployments in scope; SentinelBusy when a run is going on."""
        if self.lock.locked():
            raise SentinelBusy("a sentinel run is in progress")
        async with self.lock:
            return await self._sweep(alias, deployment, actor, rebaseline, kind)

    async def _sweep(
        self, alias: str | None, deployment: str | None, actor: str, rebaseline: bool, kind: str
    ) -> list[dict[str, Any]]:
        if self.poster is None:
            raise RuntimeError("the sentinel has no app to call (attach_app was not called)")
        await self._until_ready()
        runner = SentinelRunner(self.config, self.store, self.poster, self.embedder)
        runs = []
        self.running = True
        try:
            for name, labels in self.aliases.items():
                if alias is not None and name != alias:
                    continue
                for label in labels:
                    if deployment is not None and label != deployment:
                        continue
                    run = await runner.run(name, label, kind, actor, rebaseline)
                    runs.append(run)
                    self.counts["runs"] += 1
                    self.counts["changes_seen"] += run["status"] == "changed"
                    self.counts["failed_runs"] += run["status"] == "failed"
                    self.last_run = {k: run[k] for k in ("id", "alias", "deployment", "status", "finished_at")}
                    if kind == "scheduled":  # a long sweep keeps its lease
                        await finished_in_thread(self.store.try_lead, self.holder, self.settings.lease_seconds)
            self.counts["sweeps"] += 1
            await finished_in_thread(self.store.prune, self.settings.keep_runs)
        finally:
            self.running = False
        return runs

    async def _until_ready(self) -> None:
        gateway = getattr(getattr(self.app, "state", None), "gateway", None)
        registry = getattr(gateway, "registry", None)
        if registry is None:
            return
        deadline = time.monotonic() + READY_WAIT_SECONDS
        while not registry.is_ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway's models were not ready; sentinel run skipped")
            await asyncio.sleep(0.2)

    # -- the schedule -----------------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # keep the schedule alive; say what went wrong
                self.last_error = f"{type(error).__name__}: {error}"[:300]
                log.warning("sentinel: %s", self.last_error)
            await asyncio.sleep(self.tick_seconds)

    async def tick(self, now: float | None = None) -> list[dict[str, Any]]:
        """Renew the lease; run a sweep when one is due. Returns the runs made."""
        now = time.time() if now is None else now
        store = self.store
        self.leader = await finished_in_thread(store.try_lead, self.holder, self.settings.lease_seconds, now)
        lease = await asyncio.to_thread(store.lease)
        self.next_run = lease["next_run"]
        if not self.leader:
            return []
        if self.next_run is None:
            self.next_run = now + self.settings.first_run_seconds + self.rng.uniform(0, self.settings.jitter_seconds)
            await finished_in_thread(store.set_next_run, self.holder, self.next_run)
        if now < self.next_run or self.lock.locked():
            return []
        async with self.lock:
            try:
                runs = await self._sweep(None, None, "schedule", False, "scheduled")
                self.last_error = None
            finally:
                # Scheduled from the end of the sweep, so a slow sweep never runs back to back.
                self.next_run = (
                    time.time() + self.settings.interval_seconds + self.rng.uniform(0, self.settings.jitter_seconds)
                )
                await finished_in_thread(store.set_next_run, self.holder, self.next_run)
        return runs


def build_sentinel(config: GatewayConfig, store: StoreOpener | None) -> BackgroundService | None:
    """The sentinel for ``config``, or None when it is off or there is no store."""
    if not config.sentinel.enabled:
        return None
    if store is None:
        log.warning("sentinel.enabled is set but record.store is not: the sentinel is off")
        return None
    return SentinelService(config, store)
