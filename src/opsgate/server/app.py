"""The ASGI app: built by a factory from config, so tests build exactly the gateway they need."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from opsgate import __version__
from opsgate.auth.authenticator import Authenticator
from opsgate.auth.key_limits import per_process_key_limits
from opsgate.auth.key_store import KeyStore
from opsgate.backends.registry import ModelRegistry
from opsgate.domain.config import GatewayConfig, load_config
from opsgate.domain.context import Endpoint, JsonResult, RequestContext, StreamResult
from opsgate.domain.errors import (
    CUT_BY_SERVER,
    IN_PROCESS_SCOPE_KEY,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ServerStopping,
)
from opsgate.domain.pricing import PriceBook
from opsgate.domain.urls import redact_urls
from opsgate.evals.online import OnlineEvaluator
from opsgate.evals.store import EvalStore
from opsgate.integrity.monitor import IntegrityMonitor
from opsgate.pipeline.build import build_pipeline
from opsgate.pipeline.record import FanoutSink, LogSink, RecordSink
from opsgate.pipeline.release import ReleaseStage
from opsgate.releases.cache import ReleaseCache
from opsgate.releases.rollback import AutoRollback
from opsgate.releases.shadow import ItemPayloads, ShadowMirror
from opsgate.routing.router import Router
from opsgate.server.access import AccessMiddleware, principal_of
from opsgate.server.admin import admin_routes
from opsgate.server.audit_sink import StoreAuditSink
from opsgate.server.cache_routes import cache_routes
from opsgate.server.drain import Lifecycle, LifecycleMiddleware, register_metrics
from opsgate.server.drift_routes import drift_routes
from opsgate.server.eval_routes import eval_routes
from opsgate.server.http_io import (
    BODY_REFUSAL_KEY,
    REFUSED_BODY_KEY,
    BodyLimitMiddleware,
    BodyLimits,
    InvalidHttpError,
    error_response,
    json_response,
    read_json_body,
    render,
)
from opsgate.server.inference_routes import SHORTCUT_ROUTES, InferenceRoutes
from opsgate.server.keys_routes import keys_routes
from opsgate.server.logs import configure_logging
from opsgate.server.openapi import openapi_document
from opsgate.server.protocol_rejects import record_route_miss
from opsgate.server.readiness import public_readiness
from opsgate.server.release_routes import release_routes
from opsgate.server.reload import ConfigReloader, reload_routes
from opsgate.server.sentinel_routes import sentinel_routes
from opsgate.server.services import builders as service_builders
from opsgate.server.slo_routes import slo_routes
from opsgate.server.url_guard import UrlGuardMiddleware
from opsgate.slo.service import SloService
from opsgate.store.record_log import RecordLog
from opsgate.telemetry.setup import METRICS_DIR_ENV, Telemetry, with_metrics_dir
from opsgate.ui import ui_routes

log = logging.getLogger("opsgate.server")


class Gateway:
    """Everything one gateway process holds: config, backends, and the pipeline built from them."""

    def __init__(self, config: GatewayConfig, sink: RecordSink | None = None) -> None:
        self.config = config
        self._prices: tuple[GatewayConfig, PriceBook] | None = None
        self.record_log = RecordLog(config.record) if config.record.store else None
        # Integrity refusals and config loads go to the audit chain through the request log's store.
        self.audit = StoreAuditSink(self.record_log) if self.record_log is not None else None
        self.registry = ModelRegistry(config, self.integrity_monitor(config))
        sinks: list[RecordSink] = []
        if self.record_log is not None:
            sinks.append(self.record_log)
        if config.record.log_requests:
            sinks.append(LogSink())
        if sink is not None:
            sinks.append(sink)
        # Continuous evaluation: samples finished records off the request path (evals/online.py).
        self.online_eval = OnlineEvaluator.from_config(config, self._eval_store if self.record_log else None)
        if self.online_eval is not None:
            sinks.append(self.online_eval)
        # Drift monitor, sentinel (server/services.py): off the request path; their sinks only enqueue.
        record_log = self.record_log
        opener = (lambda: record_log.store) if record_log is not None else None
        self.services = [s for s in (build(config, opener) for build in service_builders()) if s is not None]
        sinks.extend(s.sink for s in self.services if s.sink is not None)
        self.router = Router(config, self.registry)
        self.slo = SloService(config, self.record_log)  # SLOs, alerts, feedback: read the request log
        self.telemetry = Telemetry(
            config,
            deployments=lambda: self.router.status(),  # late-bound: a config reload replaces the router
            backends=lambda: self.registry.status(),
            record=self.record_log.status if self.record_log is not None else None,
            stages=self._stage_status,
            labels={alias: [h.label for h in handles] for alias, handles in self.router.handles.items()},
        )
        if self.telemetry.metrics is not None:
            sinks.append(self.telemetry.metrics)
        self.authenticator = Authenticator(config.auth, self._key_store if self.record_log is not None else None)
        self.sink = FanoutSink(*sinks)  # kept across config reloads (server/reload.py), like the record log
        self.releases, self.release_stage, self.rollback = self._releases(config)
        self.pipeline = build_pipeline(
            config, self.router, self.sink, self.registry, authenticator=self.authenticator, release=self.release_stage
        )

        if self.telemetry.tracing is not None:
            self.pipeline.trace_with(self.telemetry.tracing, config.telemetry.tracing.stage_spans)
            self.router.tracer = self.telemetry.tracing

    @property
    def prices(self) -> PriceBook:
        """The PriceBook of the config now in force (rebuilt after a reload changed it)."""
        if self._prices is None or self._prices[0] is not self.config:
            self._prices = (self.config, PriceBook(self.config))
        return self._prices[1]

    def integrity_monitor(self, config: GatewayConfig) -> IntegrityMonitor:
        """The model-file monitor for a registry built from ``config`` (this one, or a reload's)."""
        return IntegrityMonitor(config, self.audit)

    def _stage_status(self) -> dict[str, Any]:
        statuses = ((stage.name, stage.status()) for stage in self.pipeline.stages)
        found = {name: status for name, status in statuses if status is not None}
        # Record sinks that failed (the request was answered; the request log, drift, metrics... missed it):
        # in /readyz and as opsgate_stage_status{stage="record_sinks"} gauges.
        failures = dict(self.sink.failures)
        by_sink = {f"failures_{name}": count for name, count in failures.items()}
        found["record_sinks"] = {"failures": sum(failures.values()), **by_sink}
        return found

    def _releases(self, config: GatewayConfig) -> tuple[ReleaseCache | None, ReleaseStage | None, AutoRollback | None]:
        # Releases and experiments (releases/): a cache polled from the store, the stage, the rollback watch.
        if not config.releases.enabled:
            return None, None, None
        record_log = self.record_log
        store = (lambda: record_log.store) if record_log is not None else None
        cache = ReleaseCache(store, config.releases.poll_seconds)
        shadow = ShadowMirror(
            lambda ctx: self.router(ctx),  # late-bound: a config reload replaces the router
            self._eval_store if self.record_log is not None else None,
            config.releases.shadow_max_in_flight,
            lambda: self.prices,  # late-bound: a config reload may change prices
            ItemPayloads.of(record_log),  # shadow items keep text as the request log does
        )
        watch = AutoRollback(config, store) if store is not None and config.releases.auto_rollback.enabled else None
        return cache, ReleaseStage(cache, shadow), watch

    def _eval_store(self) -> EvalStore:
        assert self.record_log is not None
        return EvalStore(self.record_log.store)

    def _key_store(self) -> KeyStore:
        assert self.record_log is not None
        return KeyStore(self.record_log.store)

    async def start(self) -> None:
        """Open the request log (replaying any journal a crash left) and start the backends."""
        if self.record_log is not None:
            self.record_log.start()
        if self.audit is not None:
            await self.audit.record_config(self.config)  # a config_loaded entry when it changed
        await self._warn_per_process_key_limits()
        if not self.config.auth.enabled:
            log.warning(
                "AUTHENTICATION IS OFF: anyone who can reach this gateway can call its models and read and erase "
                "its records. Set auth.enabled and auth.admin_key (see README, 'Keys and roles') before exposing it."
            )
        await self.registry.start()
        await self.router.start()
        await self.slo.start()
        if self.online_eval is not None:
            await self.online_eval.start()
        if self.releases is not None:
            await self.releases.start()
        if self.rollback is not None:
            await self.rollback.start()
        for service in self.services:
            await service.start()
        await self.telemetry.start()
        for stage in self.pipeline.stages:
            await stage.start()  # stages with connections (Redis) open them here

    async def _warn_per_process_key_limits(self) -> None:
        # New keys with limits are refused in this setup (server/keys_routes.py); existing ones are named here.
        problem = per_process_key_limits(self.config)
        record_log = self.record_log
        if problem is None or record_log is None or not self.config.auth.enabled:
            return
        try:
            keys = await asyncio.to_thread(lambda: KeyStore(record_log.store).list(None, include_inactive=False))
        except Exception as error:  # the store is down: the keys API says so when used
            log.warning("could not look for keys with limits: %s: %s", type(error).__name__, error)
            return
        limited = [key.key_id for key in keys if key.limits]
        if limited:
            shown = ", ".join(limited[:10]) + (f" (+{len(limited) - 10} more)" if len(limited) > 10 else "")
            log.warning("%d active key(s) carry their own limits (%s). %s", len(limited), shown, problem)

    async def stop(self) -> None:
        """Stop the backends, then store the last records."""
        for stage in self.pipeline.stages:
            await stage.close()
        await self.slo.stop()
        for service in reversed(self.services):
            await service.stop()
        if self.online_eval is not None:
            await self.online_eval.stop()
        if self.rollback is not None:
            await self.rollback.stop()
        if self.releases is not None:
            await self.releases.close()
        if self.release_stage is not None and self.release_stage.shadow is not None:
            await self.release_stage.shadow.close()
        await self.router.close()
        await self.registry.close()
        await self.telemetry.stop()
        if self.record_log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.record_log.stop)

    def _deployments(self) -> dict[str, dict[str, Any]]:
        return self.router.status()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether every alias can serve, with per-deployment and request-log detail."""
        ready = self.registry.is_ready()
        body: dict[str, Any] = {
            "status": "ready" if ready else "not_ready",
            "version": __version__,
            "deployments": self._deployments(),
            "pipeline": self.pipeline.names,
            "auth": self.authenticator.status(),
        }
        body.update(self._stage_status())  # cache and limits: counters, store state, Redis health
        slo = self.slo.status()
        if slo is not None:
            body["slo"] = slo  # the alert evaluator: last run, alerts sent, webhook failures
        if self.online_eval is not None:
            body["eval_online"] = self.online_eval.status()  # sampled, scored, dropped (queue full, rate)
        for service in self.services:
            body[service.name] = service.status()
        if ready and body["auth"].get("key_store") == "unhealthy":
            # Keys seen recently are still served; others get 503 auth_unavailable until the store is back.
            body["status"] = "degraded"
        scopes = [(d.get("breaker") or {}).get("scope") for d in body["deployments"].values()]
        if ready and "local_fallback" in scopes:
            # Shared breakers cannot reach Redis: each replica decides alone until it is back.
            body["status"] = "degraded"
        if self.record_log is not None:
            record = self.record_log.status()
            body["record"] = record
            if ready and record.get("state") == "degraded":  # store down, or refused lines wait
                # Still serving: records wait safely in the journal until the store is back.
                body["status"] = "degraded"
        return ready, body

    async def handle(self, endpoint: Endpoint, request: Request) -> Response:
        """Serve one ``/v1`` inference request through the pipeline."""
        # A body refused at the transport (size, type, time) is still a request: the pipeline records it.
        refused: GatewayError | None = request.scope.get(REFUSED_BODY_KEY)
        raw = b""
        if refused is None:
            try:
                raw = await read_json_body(request, self.config.server.max_body_bytes)
            except GatewayError as error:
                refused = error
        ctx = RequestContext(endpoint=endpoint, raw_body=raw, headers=request.headers, body_error=refused)
        if isinstance(refused, InvalidHttpError):
            # The HTTP layer answered already, quoting an id: the record must be findable by it.
            ctx.request_id = request.scope[BODY_REFUSAL_KEY].request_id
        if refused is not None:
            return render(await self.pipeline.handle(ctx))  # answered at once; nothing to cancel
        # If the client hangs up before the answer, cancel the work (and the upstream call) for it.
        loop = asyncio.get_running_loop()
        work = loop.create_task(self.pipeline.handle(ctx))
        watcher = loop.create_task(_cancel_on_disconnect(request, work))
        try:
            # Shielded, so that when this handler is cancelled the work can learn why before it is cancelled
            # too. uvicorn cancels a request's task only when its graceful-shutdown time has run out (a client
            # leaving comes through ``receive``, to the watcher): that is the server stopping, recorded as the
            # server's, in every worker process. A request the gateway sent itself (``AsgiPoster``: evals,
            # judges, the sentinel) is cancelled by its caller (a timeout, a service stopping): a 499, re-raised.
            # (A future the work settles is the shield: asyncio.shield's own costs two more closures a request.)
            finished = loop.create_future()
            work.add_done_callback(functools.partial(_settle, finished))
            await finished
            if work.cancelled():
                return Response(status_code=499)  # the watcher: the client left
            result = work.result()
        except asyncio.CancelledError:
            if work.cancelled():
                return Response(status_code=499)  # the watcher: the client left
            if not work.done():
                stopping = not request.scope.get(IN_PROCESS_SCOPE_KEY)
                if stopping:
                    ctx.scratch[CUT_BY_SERVER] = True
                work.cancel()
                await asyncio.wait([work])
                if not work.cancelled():
                    await _close_if_stream(work)  # it finished as it was cancelled: nobody reads it now
                if stopping:
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()  # answered, not cancelled: the 503 is this task's result
                    stopped = JsonResult.from_error(ServerStopping())
                    if ctx.request_id:
                        stopped.headers["x-request-id"] = ctx.request_id  # the id its record has
                    return render(stopped)
                raise
            await _close_if_stream(work)  # finished as we were cancelled: nobody will read the stream
            raise
        finally:
            watcher.cancel()
        return render(result)

    def models(self, allowed: Callable[[str], bool] = lambda name: True) -> dict[str, Any]:
        """``/v1/models``: the aliases (those ``allowed`` for the caller), OpenAI style."""
        return {
            "object": "list",
            "data": [
                {
                    "id": alias.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "opsgate",
                    "kind": alias.kind,
                    "description": alias.description,
                }
                for alias in self.config.models
                if allowed(alias.name)
            ],
        }


def _settle(finished: asyncio.Future[None], work: asyncio.Future[Any]) -> None:
    """``work`` is done (answered, failed or cancelled): wake the handler waiting on ``finished``."""
    if not finished.done():  # cancelled with the handler: nothing to wake
        finished.set_result(None)


async def _close_if_stream(work: asyncio.Future[Any]) -> None:
    """Close the stream ``work`` finished with, if it did: its slot and upstream are given back now."""
    finished = work.result() if work.done() and not work.cancelled() and work.exception() is None else None
    if isinstance(finished, StreamResult):
        await finished.close()


async def _cancel_on_disconnect(request: Request, work: asyncio.Future[Any]) -> None:
    # After the body is read, the next ASGI message is the disconnect (or nothing, until the end).
    while not work.done():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            work.cancel()
            return


def _inference(gateway: Gateway, endpoint: Endpoint) -> Callable[[Request], Any]:
    async def handler(request: Request) -> Response:
        return await gateway.handle(endpoint, request)

    return handler


def create_app(
    config: GatewayConfig | None = None, *, sink: RecordSink | None = None, config_path: str | None = None
) -> Starlette:
    """The gateway's ASGI app for ``config`` (the embedded default when None; ``config_path`` for reloads)."""
    gateway = Gateway(config or load_config(None), sink)
    lifecycle = Lifecycle()  # requests in flight and draining (server/drain.py)
    register_metrics(gateway.telemetry.registry, lifecycle)
    reloader = ConfigReloader(gateway, lifecycle, config_path)

    async def models(request: Request) -> Response:
        return json_response(gateway.models(principal_of(request).allows_model))

    async def model(request: Request) -> Response:
        name = request.path_params["model"]
        for entry in gateway.models(principal_of(request).allows_model)["data"]:
            if entry["id"] == name:
                return json_response(entry)
        raise NotFoundError(f"The model '{name}' does not exist.", param="model", code="model_not_found")

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, body = gateway.readiness()
        # The access layer leaves a principal only for a key that may read (or with auth off).
        principal = getattr(request.state, "principal", None)
        if principal is not None and not principal.is_operator:
            # The drift monitor's and sentinel's details are operator-only in their own APIs: a tenant
            # key sees that they run, not which aliases, runs or changes they hold.
            for service in gateway.services:
                if isinstance(body.get(service.name), dict):
                    body[service.name] = {"running": bool(body[service.name])}
            # Only the deployments of aliases the key may call, as /v1/models lists them (an alias it may
            # not call answers as unknown: its deployments must not name it here).
            deployments = body.get("deployments")
            if isinstance(deployments, dict):
                body["deployments"] = {
                    label: state
                    for label, state in deployments.items()
                    if principal.allows_model(str((state or {}).get("alias") or label.rsplit("#", 1)[0]))
                }
        detailed = principal is not None
        return json_response(redact_urls(body) if detailed else public_readiness(body), 200 if ready else 503)

    async def deployments(request: Request) -> Response:
        data = [{"deployment": label, **state} for label, state in gateway.router.status().items()]
        return json_response({"object": "list", "data": redact_urls(data)})

    async def metrics(request: Request) -> Response:
        if not principal_of(request).is_operator:
            raise PermissionDeniedError("/metrics covers every tenant: it needs an operator key.")
        if gateway.telemetry.registry is None:
            raise NotFoundError("Metrics are off (telemetry.metrics.enabled).", code="not_found")
        body, content_type = gateway.telemetry.render(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    async def openapi(request: Request) -> Response:
        return json_response(openapi_document(__version__))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            error: GatewayError = InvalidRequestError(
                f"Method {request.method} is not allowed on {request.url.path}.",
                status=405,
                code="method_not_allowed",
            )
        elif exc.status_code == 404:
            error = NotFoundError(f"No route {request.method} {request.url.path}.", code="not_found")
        else:
            error = InvalidRequestError(str(exc.detail), status=exc.status_code)
        if exc.status_code in (404, 405):
            # A call to a route the gateway lacks (an SDK's /v1/responses, a typo) is still a request:
            # recorded (rate-limited like the HTTP layer's refusals) and given an id to quote.
            record_id = record_route_miss(request, error)
            if record_id is not None:
                headers["x-request-id"] = record_id
        return error_response(error, headers)

    async def gateway_error(request: Request, exc: Exception) -> Response:
        # The one place a route's GatewayError becomes its OpenAI-shaped answer (routes raise, never render).
        assert isinstance(exc, GatewayError)
        return error_response(exc)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(GatewayError("Internal error; the gateway logged the details."))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        # Everything built at start-up (models, config, modules) lives as long as the process: keep
        # it out of the garbage collector's full passes, which otherwise stall requests for tens of ms.
        gc.collect()
        gc.freeze()
        # A helper thread (the record writer, a model's worker) may hold the GIL for the whole default
        # 5 ms switch interval; a shorter one bounds how long the event loop waits for it.
        sys.setswitchinterval(0.0005)
        try:
            yield
        finally:
            await reloader.close()
            await gateway.stop()

    server = gateway.config.server
    body_limits = BodyLimits(inference_bytes=server.max_body_bytes, timeout_seconds=server.body_timeout_seconds)
    inference = [
        Route("/v1/chat/completions", _inference(gateway, "chat"), methods=["POST"]),
        Route("/v1/completions", _inference(gateway, "completion"), methods=["POST"]),
        Route("/v1/embeddings", _inference(gateway, "embedding"), methods=["POST"]),
    ]
    routes = [
        *inference,
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/admin/deployments", deployments, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *admin_routes(gateway),
        *slo_routes(gateway),
        *keys_routes(gateway),
        *cache_routes(gateway),
        *eval_routes(gateway),
        *release_routes(gateway),
        *drift_routes(gateway),
        *sentinel_routes(gateway),
        *ui_routes(gateway),  # the /ui dashboard and its static files
        *reload_routes(reloader),
    ]
    # Starlette's ExceptionMiddleware takes every handler but the one for Exception (ServerErrorMiddleware's).
    route_errors: dict[Any, Any] = {HTTPException: http_error, GatewayError: gateway_error}
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={**route_errors, Exception: unexpected},
        middleware=[
            Middleware(LifecycleMiddleware, lifecycle=lifecycle),  # counts requests; 503 /readyz while draining
            # No route, public or not, reads an unbounded or endless body.
            Middleware(BodyLimitMiddleware, limits=body_limits),
            Middleware(UrlGuardMiddleware),
            Middleware(AccessMiddleware, authenticator=gateway.authenticator),
            # Innermost, see the class; a shortcut only, left out where Starlette lacks the helper it needs.
            *([Middleware(InferenceRoutes, routes=inference, handlers=route_errors)] if SHORTCUT_ROUTES else []),
        ],
    )
    app.state.gateway = gateway
    if gateway.online_eval is not None:
        gateway.online_eval.attach_app(app)  # an opt-in judge calls this app's own /v1
    for service in gateway.services:
        service.attach_app(app)  # the sentinel calls this app's own /v1
    app.state.lifecycle = lifecycle
    app.state.reloader = reloader
    return app


def app_from_env() -> Starlette:
    """App factory for ``uvicorn --factory`` and multi-worker serving: config path from OPSGATE_CONFIG."""
    configure_logging(os.environ.get("OPSGATE_LOG_LEVEL", "info"))
    path = os.environ.get("OPSGATE_CONFIG") or None
    config = load_config(path)
    metrics_dir = os.environ.get(METRICS_DIR_ENV)
    if metrics_dir:  # set by ``opsgate serve --workers N``: any worker's /metrics answers for all of them
        config = with_metrics_dir(config, metrics_dir)
    return create_app(config, config_path=path)
