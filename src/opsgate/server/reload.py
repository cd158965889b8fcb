"""Live config reload (SIGHUP or ``POST /admin/config/reload``): validate, build, swap, retire the old one.

A reload rebuilds one *generation* — the model registry (backends, integrity monitor), the router
(breakers, work queues, health checks) and the pipeline (validation, limits, guard, cache stages) —
from the new file, starts it, waits for its models to load, and then switches the gateway's
references in one synchronous step on the event loop: a request that starts after the switch sees
only the new generation, one that started before finishes on the old. The old generation is closed
once every request that entered before the switch has left (streams included), or after
``RETIRE_TIMEOUT`` seconds.

Not rebuilt, and so not reloadable (a file that changes them is refused, naming the sections): the
request log and its journal writer (one writer per journal directory holds its lock for life),
authentication (the access middleware holds the authenticator and its key cache), telemetry (the
metrics registry and the counters Prometheus has already scraped), the SLO service and alerts, and
the server's listen settings. Those need a restart, which a rolling restart does without a dropped
request.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from opsgate.audit.chain import append_in_transaction
from opsgate.audit.config_change import changed_paths, effective_config, fingerprint
from opsgate.backends.registry import ModelRegistry
from opsgate.domain.config import ConfigError, GatewayConfig, load_config
from opsgate.pipeline.build import build_pipeline
from opsgate.pipeline.stage import Pipeline, Stage
from opsgate.routing.router import Router
from opsgate.server.access import actor_of, require_operator
from opsgate.server.drain import Lifecycle
from opsgate.server.http_io import json_response

if TYPE_CHECKING:
    from opsgate.server.app import Gateway

log = logging.getLogger("opsgate.server")

# Sections held by objects that live as long as the process (see the module docstring).
# ``releases``: the release stage and its cache are built once with the gateway and kept across reloads;
# ``drift`` and ``sentinel``: background services (server/services.py) built once, not per generation.
RESTART_ONLY = ("server", "record", "auth", "telemetry", "slo", "alerts", "releases", "drift", "sentinel")
LOAD_TIMEOUT = 600.0  # seconds the new generation's models may take to load before the reload is refused
RETIRE_TIMEOUT = 900.0  # the longest an old generation waits for its requests before it is closed anyway


@dataclass
class Generation:
    """What a reload rebuilds: the config and the registry, router and pipeline built from it."""

    config: GatewayConfig
    registry: ModelRegistry
    router: Router
    pipeline: Pipeline
    shared: tuple[object, ...] = ()  # stages the gateway keeps for life: neither started nor closed here

    def own_stages(self) -> list[Stage]:
        """The pipeline's stages this generation started and must close."""
        return [stage for stage in self.pipeline.stages if not any(stage is kept for kept in self.shared)]


@dataclass
class ReloadResult:
    """The outcome: ``applied`` or ``refused`` (with the problems), and what changed."""

    result: str
    path: str | None
    problems: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    generation: int = 0
    audited: bool = False

    def to_json(self) -> dict[str, Any]:
        """The admin route's answer."""
        return {
            "result": self.result,
            "path": self.path,
            "problems": self.problems,
            "changed": self.changed[:200],
            "generation": self.generation,
            "audited": self.audited,
        }


def restart_only_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The restart-only sections that differ between ``old`` and ``new``."""
    return [name for name in RESTART_ONLY if getattr(old, name, None) != getattr(new, name, None)]


def build_generation(gateway: Gateway, config: GatewayConfig) -> Generation:
    """A registry, router and pipeline for ``config`` that share the gateway's sink, authenticator and tracer."""
    registry = ModelRegistry(config, gateway.integrity_monitor(config))
    router = Router(config, registry)
    # Stages the gateway holds for its whole life (the release stage, when releases are on) join the new pipeline.
    kept: dict[str, Any] = {}
    release = getattr(gateway, "release_stage", None)
    if release is not None:
        kept["release"] = release
    pipeline = build_pipeline(config, router, gateway.sink, registry, authenticator=gateway.authenticator, **kept)
    tracing = gateway.telemetry.tracing
    if tracing is not None:
        pipeline.trace_with(tracing, config.telemetry.tracing.stage_spans)
        router.tracer = tracing
    return Generation(config, registry, router, pipeline, tuple(kept.values()))


async def start_generation(generation: Generation) -> None:
    """Start backends, routing and the stages that hold connections (as ``Gateway.start`` does)."""
    await generation.registry.start()
    await generation.router.start()
    for stage in generation.own_stages():
        await stage.start()


async def close_generation(generation: Generation) -> None:
    """Close what ``start_generation`` opened, stages first (as ``Gateway.stop`` does)."""
    for stage in generation.own_stages():
        await stage.close()
    await generation.router.close()
    await generation.registry.close()


class ConfigReloader:
    """Reloads the gateway's config file; one reload at a time."""

    def __init__(self, gateway: Gateway, lifecycle: Lifecycle, path: str | None) -> None:
        self.gateway = gateway
        self.lifecycle = lifecycle
        self.path = path
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    async def reload(self, actor: str) -> ReloadResult:
        """Validate the file, build and start the new generation, swap it in; refuse with the reasons."""
        async with self._lock:
            outcome = await self._reload()
            self.lifecycle.reloads[outcome.result] += 1
            outcome.generation = self.lifecycle.generation
            outcome.audited = await self._audit(actor, outcome)
            level = logging.INFO if outcome.result == "applied" else logging.ERROR
            log.log(level, "config reload %s (%s): %s", outcome.result, actor, "; ".join(outcome.problems) or "ok")
            return outcome

    async def _reload(self) -> ReloadResult:
        if self.path is None:
            problem = "the gateway was started without a config file (--config / OPSGATE_CONFIG): nothing to reload"
            return ReloadResult("refused", None, [problem])
        old = self.gateway.config
        try:
            new = await run_in_threadpool(load_config, self.path)
        except ConfigError as error:
            return ReloadResult("refused", self.path, error.problems)
        changed = changed_paths(effective_config(old), effective_config(new))
        fixed = restart_only_changes(old, new)
        if fixed:
            problems = [f"{name}: changed, and needs a restart (a rolling restart drops no request)" for name in fixed]
            return ReloadResult("refused", self.path, problems, changed)
        try:
            generation = build_generation(self.gateway, new)
        except Exception as error:  # a backend that cannot be built from a valid file (a missing model file)
            return ReloadResult("refused", self.path, [f"cannot build: {type(error).__name__}: {error}"], changed)
        try:
            await start_generation(generation)
            async with asyncio.timeout(LOAD_TIMEOUT):
                await generation.registry.wait_loaded()
            if not generation.registry.is_ready():
                raise RuntimeError(f"not ready: {generation.registry.status()}")
        except Exception as error:
            await close_generation(generation)
            return ReloadResult("refused", self.path, [f"cannot start: {type(error).__name__}: {error}"], changed)
        self._swap(generation)
        if self.gateway.audit is not None:
            await self.gateway.audit.record_config(new)  # config_loaded, as at start
        return ReloadResult("applied", self.path, [], changed)

    def _swap(self, new: Generation) -> None:
        gateway = self.gateway
        old = Generation(gateway.config, gateway.registry, gateway.router, gateway.pipeline, new.shared)
        # One synchronous step: no request can see half of each generation.
        gateway.config, gateway.registry, gateway.router, gateway.pipeline = (
            new.config,
            new.registry,
            new.router,
            new.pipeline,
        )
        if gateway.telemetry.metrics is not None:  # aliases the new file adds get series of their own
            gateway.telemetry.metrics.models = frozenset(m.name for m in new.config.models)
        self.lifecycle.generation += 1
        task = asyncio.create_task(self._retire(old, self.lifecycle.mark()))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: Generation, seq: int) -> None:
        finished = await self.lifecycle.wait_for_requests_before(seq, RETIRE_TIMEOUT)
        if not finished:
            log.warning("closing the previous config generation with requests still running on it")
        try:
            await close_generation(old)
        except Exception:
            log.exception("closing the previous config generation failed")

    async def close(self) -> None:
        """Wait for old generations still retiring (at shutdown)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _audit(self, actor: str, outcome: ReloadResult) -> bool:
        record_log = self.gateway.record_log
        if record_log is None:
            return False
        details = {
            "result": outcome.result,
            "path": outcome.path,
            "problems": outcome.problems,
            "changed": outcome.changed[:200],
            "generation": outcome.generation,
            "after_sha256": fingerprint(effective_config(self.gateway.config)),
        }
        try:
            await run_in_threadpool(append_in_transaction, record_log.store, actor, "config_reload", "config", details)
        except Exception as error:  # the store is down: the reload stands, the log says it was not audited
            log.error("config reload not audited: %s: %s", type(error).__name__, error)
            return False
        return True


def reload_routes(reloader: ConfigReloader) -> list[Route]:
    """``POST /admin/config/reload``: operator only; 200 applied, 422 refused with the problems."""

    async def reload(request: Request) -> Response:
        require_operator(request, "reload the gateway's config")
        outcome = await reloader.reload(actor_of(request))
        return json_response(outcome.to_json(), 200 if outcome.result == "applied" else 422)

    return [Route("/admin/config/reload", reload, methods=["POST"])]
