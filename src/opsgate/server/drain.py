"""Graceful drain and the process's serving state: requests in flight, draining, SIGTERM and SIGHUP.

On SIGTERM a replica behind a load balancer must leave rotation before it stops listening, or the
balancer sends it connections that are refused. So the first SIGTERM only starts the drain:
``/readyz`` answers 503 ``draining`` and every response says ``Connection: close`` (keep-alive
clients move to another replica), while requests are still served for ``drain_delay`` seconds —
long enough for the balancer's readiness checks to notice. Then uvicorn's own shutdown runs: the
listener closes, in-flight requests and streams finish within ``drain_timeout`` (the rest are
cancelled and recorded as such), and the lifespan stops the gateway, which stores the journal's
last lines. A second SIGTERM or a SIGINT skips the delay.

``Lifecycle`` also numbers every HTTP request as it enters, which is how a config reload knows
when the requests that started on the old pipeline have all finished (``wait_for_requests_before``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import orjson
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opsgate.telemetry.metrics import FamiliesCollector

log = logging.getLogger("opsgate.server")

# Probes and scrapes are not load: they are left out of the in-flight gauges (the HPA's signal).
_NOT_COUNTED = frozenset({"/healthz", "/readyz", "/metrics"})


class Lifecycle:
    """Requests in flight (each with a sequence number), draining, and config reload counters."""

    def __init__(self) -> None:
        self.draining = False
        self._next_seq = 0
        self._active: dict[int, bool] = {}  # sequence number -> is an inference call (/v1 POST)
        self.inference_in_flight = 0
        self.generation = 1
        self.reloads: dict[str, int] = {"applied": 0, "refused": 0}

    @property
    def in_flight(self) -> int:
        """HTTP requests being served now, probes and scrapes left out."""
        return len(self._active)

    def enter(self, inference: bool) -> int:
        """Count one request in; returns its sequence number for ``leave``."""
        seq = self._next_seq
        self._next_seq += 1
        self._active[seq] = inference
        if inference:
            self.inference_in_flight += 1
        return seq

    def leave(self, seq: int) -> None:
        """Count a request out once its response is fully sent (or it failed)."""
        if self._active.pop(seq, False):
            self.inference_in_flight -= 1

    def mark(self) -> int:
        """The sequence number the next request will get: everything below it has already entered."""
        return self._next_seq

    async def wait_for_requests_before(self, seq: int, within: float) -> bool:
        """Wait until every request numbered below ``seq`` has left; False if ``within`` seconds passed first."""
        deadline = time.monotonic() + within
        while any(active < seq for active in self._active):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def begin_drain(self) -> None:
        """Readiness turns 503 and responses close their connections from now on."""
        self.draining = True

    def families(self) -> Iterable[Metric]:
        """Gauges for ``/metrics``: in-flight requests (the autoscaler's signal), draining, reloads."""
        yield GaugeMetricFamily(
            "opsgate_http_requests_in_flight", "HTTP requests being served (not probes, not scrapes).", self.in_flight
        )
        yield GaugeMetricFamily(
            "opsgate_inference_requests_in_flight",
            "Inference calls (/v1 POST) being served, streams until their last chunk.",
            self.inference_in_flight,
        )
        yield GaugeMetricFamily("opsgate_draining", "1 while this replica drains before it exits.", int(self.draining))
        yield GaugeMetricFamily("opsgate_config_generation", "Config generation serving (1 at start).", self.generation)
        reloads = CounterMetricFamily("opsgate_config_reloads", "Config reloads by result.", labels=["result"])
        for result, count in self.reloads.items():
            reloads.add_metric([result], count)
        yield reloads


def register_metrics(registry: CollectorRegistry | None, lifecycle: Lifecycle) -> None:
    """Expose ``lifecycle``'s gauges through the gateway's metrics registry (when metrics are on)."""
    if registry is not None:
        registry.register(FamiliesCollector(lifecycle.families))


class LifecycleMiddleware:
    """Counts requests in and out; while draining, ``/readyz`` is 503 and every response closes its connection."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lifecycle = self.lifecycle
        path: str = scope.get("path", "")
        if lifecycle.draining and path == "/readyz":
            await _send_draining(send)
            return
        if path in _NOT_COUNTED:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if lifecycle.draining and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        seq = lifecycle.enter(path.startswith("/v1/") and scope.get("method") == "POST")
        try:
            await self.app(scope, receive, send_closing)
        finally:
            lifecycle.leave(seq)


async def _send_draining(send: Send) -> None:
    body = orjson.dumps({"status": "draining"})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 503, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain window before shutdown on SIGTERM, and SIGHUP calling ``on_reload``.

    ``drain_delay`` seconds between the first SIGTERM and closing the listener (0: close at once, as
    plain uvicorn); in-flight requests then get ``config.timeout_graceful_shutdown`` seconds.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        drain_delay: float = 0.0,
        on_reload: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_delay = drain_delay
        self.on_reload = on_reload
        self._exit_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reloads: set[asyncio.Future[Any]] = set()

    async def startup(self, sockets: Any = None) -> None:
        """Start serving, then listen for SIGHUP (main thread only, like uvicorn's own signals)."""
        await super().startup(sockets=sockets)
        self._loop = asyncio.get_running_loop()
        if self.on_reload is not None and threading.current_thread() is threading.main_thread():
            self._loop.add_signal_handler(signal.SIGHUP, self._reload)

    def _reload(self) -> None:
        assert self.on_reload is not None
        log.info("SIGHUP: reloading the config file")
        result = self.on_reload()
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First SIGTERM: drain (readiness 503) for ``drain_delay``; anything else: uvicorn's shutdown."""
        if sig == signal.SIGTERM and not self.lifecycle.draining and self.drain_delay > 0:
            self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
            self.lifecycle.begin_drain()
            self._exit_at = time.monotonic() + self.drain_delay
            log.warning(
                "SIGTERM: draining for %.1f s (readiness 503), then finishing in-flight requests within %.0f s",
                self.drain_delay,
                self.config.timeout_graceful_shutdown or 0,
            )
            return
        self.lifecycle.begin_drain()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s), ending the drain window when it is over."""
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)
