"""The request pipeline: one ordered list of stages, each with a ``before`` and an ``after`` hook.

``before`` hooks run in order and may short-circuit with a response (cache hit, guard block, 429).
``after`` hooks run in reverse order for every stage whose ``before`` ran, including when a later
stage short-circuited or failed, so recording and metrics see every request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext, StreamResult
from opsgate.domain.errors import CUT_BY_SERVER, BackendFailure, ClientDisconnected, GatewayError, ServerStopping

log = logging.getLogger("opsgate.pipeline")

Handler = Callable[[RequestContext], Awaitable[GatewayResponse]]


class Stage(Protocol):
    """One step of the request path, with a lifecycle the gateway drives (``PassStage`` has no-op ones)."""

    name: str

    async def start(self) -> None:
        """Open what the stage holds (a Redis connection); the gateway calls it once before serving."""
        ...

    async def close(self) -> None:
        """Close what ``start`` opened; the gateway calls it once when it stops or a reload retires the stage."""
        ...

    def status(self) -> dict[str, Any] | None:
        """What ``/readyz`` shows under the stage's name (counters, store state); None: nothing to show."""
        ...

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """Inspect or enrich the request; return a response to stop the request here."""
        ...

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        """Inspect or rewrite the response (or wrap a stream); return what goes on outward."""
        ...


class PipelineTracer(Protocol):
    """Spans for requests (see ``opsgate.telemetry.tracing``); the pipeline only calls these hooks."""

    def begin(self, ctx: RequestContext) -> None:
        """A request arrived: open its span."""
        ...

    def wrap(self, name: str, call: Callable[[RequestContext], Awaitable[Any]]) -> Callable[[RequestContext], Any]:
        """``call`` (a stage's ``before`` or the terminal) inside a child span named after ``name``."""
        ...

    def finish(self, ctx: RequestContext, response: GatewayResponse | None) -> None:
        """The pipeline is done (None: cancelled): annotate the span and end it, or at a stream's end."""
        ...


class PassStage:
    """A stage that does nothing; subclass and override one hook (or a lifecycle method)."""

    name = "pass"

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    def status(self) -> dict[str, Any] | None:
        """Nothing for ``/readyz``: the stage is not listed there."""
        return None

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """Let the request through."""
        return None

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        """Let the response through."""
        return response


def _as_response(error: Exception, ctx: RequestContext, where: str) -> JsonResult:
    if isinstance(error, GatewayError):
        return JsonResult.from_error(error)
    # Not a client's mistake: log the traceback, answer in the error shape, keep serving. This is the
    # last resort for our own bugs; it feeds no breaker (the router has judged the deployment by
    # then), and client data must never get here: validation and the backends answer it with a 4xx.
    log.exception("request %s failed in %s", ctx.request_id, where)
    return JsonResult.from_error(BackendFailure(f"internal error in {where}: {type(error).__name__}"))


class Pipeline:
    """Runs the stages around a terminal handler (the backend call)."""

    def __init__(self, stages: Sequence[Stage], terminal: Handler) -> None:
        self.stages = tuple(stages)
        self.terminal = terminal
        # The hooks the loop calls; tracing swaps in wrapped ones once, so untraced requests pay nothing.
        self._befores: tuple[Callable[[RequestContext], Awaitable[GatewayResponse | None]], ...] = tuple(
            stage.before for stage in self.stages
        )
        self._terminal: Handler = terminal
        self._tracer: PipelineTracer | None = None

    @property
    def names(self) -> list[str]:
        """The stage names in order, ending with the terminal call."""
        return [stage.name for stage in self.stages] + ["backend"]

    def trace_with(self, tracer: PipelineTracer, stage_spans: bool = True) -> None:
        """Trace every request: a span around it, and (``stage_spans``) one per stage and backend call."""
        self._tracer = tracer
        if stage_spans:
            self._befores = tuple(tracer.wrap(stage.name, stage.before) for stage in self.stages)
            self._terminal = tracer.wrap("backend", self.terminal)
        self.handle = self._handle_traced  # type: ignore[method-assign]

    async def _handle_traced(self, ctx: RequestContext) -> GatewayResponse:
        assert self._tracer is not None
        self._tracer.begin(ctx)
        try:
            response = await Pipeline.handle(self, ctx)  # the plain loop (the instance's handle is this one)
        except asyncio.CancelledError:
            self._tracer.finish(ctx, None)
            raise
        self._tracer.finish(ctx, response)
        return response

    async def handle(self, ctx: RequestContext) -> GatewayResponse:
        """Run one request through every stage and the backend."""
        entered = 0
        response: GatewayResponse | None = None
        cancelled: asyncio.CancelledError | None = None
        try:
            for stage, before in zip(self.stages, self._befores, strict=True):
                entered += 1
                try:
                    response = await before(ctx)
                except Exception as error:
                    response = _as_response(error, ctx, stage.name)
                if response is not None:
                    break
            if response is None:
                try:
                    response = await self._terminal(ctx)
                except Exception as error:
                    response = _as_response(error, ctx, "backend")
        except asyncio.CancelledError as error:
            # The client left (or the server is stopping): the after hooks still run, so limits are
            # released and the request is recorded as 499; then the cancellation goes on.
            cancelled = error
            stopped = ctx.scratch.get(CUT_BY_SERVER)  # set by the server's handler: a shutdown, not the client
            response = JsonResult.from_error(ServerStopping() if stopped else ClientDisconnected())
        try:
            for stage in reversed(self.stages[:entered]):
                try:
                    response = await stage.after(ctx, response)
                except Exception as error:
                    replacement = _as_response(error, ctx, stage.name)
                    if isinstance(response, StreamResult):
                        # Replaced by the error: the stream must still give back its slot, limits and upstream,
                        # and what its callbacks record is that error, not a client that left.
                        response.outcome.error = response.outcome.error or replacement.error
                        await response.close()
                    response = replacement
        except BaseException:
            if isinstance(response, StreamResult):
                response.outcome.error = response.outcome.error or ClientDisconnected()
                await response.close()  # cancelled among the after hooks: nobody will read this stream
            raise
        if cancelled is not None:
            raise cancelled
        return response
