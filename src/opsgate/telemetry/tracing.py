"""OpenTelemetry traces for every request, with the GenAI semantic conventions, exported over OTLP/HTTP.

One SERVER span per request, named ``{gen_ai.operation.name} {gen_ai.request.model}``; a child span
per pipeline stage that does real work (``opsgate.auth``, ``opsgate.guard``, ``opsgate.limits``,
``opsgate.cache``) and one CLIENT span per upstream attempt. An incoming ``traceparent`` is honoured.
The trace id goes into the record (``tags.trace_id``) and the ``x-opsgate-trace-id`` response
header. Spans go to a ``BatchSpanProcessor``, so encoding and export happen on its thread, never on
the request path (but in the same process: see docs/benchmarks.md for what a traced request costs).

The tracer provider belongs to the gateway (not the process-wide global), so tests and several
gateways in one process each get their own. Parents are passed explicitly rather than through the
context-variable API: fewer calls per span, and nothing leaks between concurrent requests.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from opsgate import __version__
from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext, StreamOutcome, StreamResult
from opsgate.domain.errors import GatewayError
from opsgate.domain.requests import ChatCompletionRequest, CompletionRequest
from opsgate.domain.telemetry_config import TracingConfig

TRACE_HEADER = "x-opsgate-trace-id"
OPERATIONS = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
_SPAN = "telemetry.span"  # ctx.scratch: the request's server span
_PARENT = "telemetry.parent"  # ctx.scratch: the span an upstream attempt hangs under
# Stages that take microseconds and say nothing a request span does not: no span of their own (each
# span costs ~50-80 µs of CPU to build, queue and encode). "backend" is the router: its attempts have
# spans, and they hang straight under the request span.
# record_admission: a cached comparison (~0.3 us); a span would cost more than the stage.
UNTRACED_STAGES = frozenset({"request_id", "record", "record_admission", "validation", "backend"})
# Request parameters copied onto the span when the client set them (GenAI attribute ← body field).
_REQUEST_PARAMS = (
    ("gen_ai.request.max_tokens", "max_tokens"),
    ("gen_ai.request.temperature", "temperature"),
    ("gen_ai.request.top_p", "top_p"),
    ("gen_ai.request.frequency_penalty", "frequency_penalty"),
    ("gen_ai.request.presence_penalty", "presence_penalty"),
    ("gen_ai.request.seed", "seed"),
)

T = TypeVar("T")


class Deployment:
    """What a span says about a deployment: its provider (``gen_ai.provider.name``) and model name."""

    __slots__ = ("model", "provider")

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model


def error_type(error: BaseException) -> str:
    """``error.type``: the gateway's error code when it has one, else the exception's class name."""
    if isinstance(error, GatewayError):
        return error.code or error.error_type
    return type(error).__name__


def _messages(body: object) -> list[dict[str, Any]] | None:
    """The input in the ``gen_ai.input.messages`` shape (role + text parts)."""
    if isinstance(body, ChatCompletionRequest):
        return [{"role": m.role, "parts": [{"type": "text", "content": m.text()}]} for m in body.messages]
    if isinstance(body, CompletionRequest):
        return [{"role": "user", "parts": [{"type": "text", "content": body.prompt_text()}]}]
    return None


class Tracing:
    """The gateway's tracer: request spans, stage spans and upstream attempt spans."""

    def __init__(
        self,
        config: TracingConfig,
        deployments: Mapping[str, Deployment],
        exporter: Any | None = None,
    ) -> None:
        self.config = config
        self.deployments = dict(deployments)
        resource = Resource.create({"service.name": config.service_name, "service.version": __version__})
        # New traces are sampled in ``begin`` (before the SDK is involved: an unsampled request then
        # costs a random number, not a span); a caller's traceparent decides for its own traces.
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
        self.sample_ratio = config.sample_ratio
        self._random = random.Random()
        if exporter is None:
            exporter = OTLPSpanExporter(
                endpoint=config.otlp_endpoint,
                headers={k: v.get_secret_value() for k, v in config.headers.items()},
                timeout=config.export_timeout_seconds,
            )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter, max_queue_size=config.max_queue_size, schedule_delay_millis=config.export_interval_ms
            )
        )
        self.tracer = self.provider.get_tracer("opsgate", __version__)
        self.propagator = TraceContextTextMapPropagator()

    def shutdown(self) -> None:
        """Export what is queued and stop the export thread (blocks up to the export timeout)."""
        self.provider.shutdown()

    # -- the request span (PipelineTracer) ------------------------------------------------------------

    def begin(self, ctx: RequestContext) -> None:
        """Open the request's span (a child of the caller's ``traceparent`` if it sent one)."""
        parent: Context | None = None
        if "traceparent" in ctx.headers:
            parent = self.propagator.extract(ctx.headers)
        elif self.sample_ratio < 1.0 and self._random.random() >= self.sample_ratio:
            # Not sampled: a trace id for the record and the header, and nothing else to do.
            ctx.tags["trace_id"] = format(self._random.getrandbits(128) or 1, "032x")
            return
        operation = OPERATIONS.get(ctx.endpoint, ctx.endpoint)
        span = self.tracer.start_span(
            operation, context=parent, kind=SpanKind.SERVER, attributes={"gen_ai.operation.name": operation}
        )
        ctx.scratch[_SPAN] = span
        ctx.scratch[_PARENT] = span
        ctx.tags["trace_id"] = format(span.get_span_context().trace_id, "032x")

    def wrap(self, name: str, call: Callable[[RequestContext], Awaitable[T]]) -> Callable[[RequestContext], Any]:
        """``call`` inside a child span ``opsgate.{name}``; upstream attempts made meanwhile nest under it."""
        if name in UNTRACED_STAGES:
            return call
        span_name = f"opsgate.{name}"
        tracer = self.tracer

        async def traced(ctx: RequestContext) -> T:
            parent = ctx.scratch.get(_SPAN)
            if parent is None or not parent.is_recording():
                return await call(ctx)
            span = tracer.start_span(span_name, context=set_span_in_context(parent))
            ctx.scratch[_PARENT] = span
            try:
                return await call(ctx)
            except BaseException as error:
                span.set_attribute("error.type", error_type(error))
                span.set_status(Status(StatusCode.ERROR))
                raise
            finally:
                ctx.scratch[_PARENT] = parent
                span.end()

        return traced

    def finish(self, ctx: RequestContext, response: GatewayResponse | None) -> None:
        """Describe the request on its span and end it now, or when a stream ends."""
        if response is not None:
            response.headers[TRACE_HEADER] = ctx.tags["trace_id"]
        span: Span | None = ctx.scratch.get(_SPAN)
        if span is None or not span.is_recording():
            return
        self._request_attributes(ctx, span)
        if response is None:
            span.set_attributes({"http.response.status_code": 499, "error.type": "client_disconnected"})
            span.end()
        elif isinstance(response, StreamResult):
            response.on_finish.append(lambda outcome: self._end_stream(ctx, span, outcome))
        else:
            self._end_json(ctx, span, response)

    def _request_attributes(self, ctx: RequestContext, span: Span) -> None:
        body = ctx.body
        operation = OPERATIONS.get(ctx.endpoint, ctx.endpoint)
        model = getattr(body, "model", None)
        if model:
            span.update_name(f"{operation} {model}")
            span.set_attribute("gen_ai.request.model", model)
        for attribute, field in _REQUEST_PARAMS:
            value = getattr(body, field, None)
            if value is not None:
                span.set_attribute(attribute, value)
        served = self.deployments.get(ctx.deployment or "")
        span.set_attribute("gen_ai.provider.name", served.provider if served else "opsgate")
        span.set_attribute("opsgate.request_id", ctx.request_id)
        if ctx.deployment:
            span.set_attribute("opsgate.deployment", ctx.deployment)
        tenant = ctx.tenant
        if tenant:
            span.set_attribute("opsgate.tenant", tenant)
        if ctx.cache_hit:
            span.set_attribute("opsgate.cache_hit", True)
        if self.config.capture_content:
            messages = _messages(body)
            if messages is not None:
                span.set_attribute("gen_ai.input.messages", json.dumps(messages, ensure_ascii=False))

    def _usage(self, span: Span, usage: Mapping[str, Any] | None) -> None:
        if usage:
            if usage.get("prompt_tokens") is not None:
                span.set_attribute("gen_ai.usage.input_tokens", usage["prompt_tokens"])
            if usage.get("completion_tokens") is not None:
                span.set_attribute("gen_ai.usage.output_tokens", usage["completion_tokens"])

    def _error(self, span: Span, status: int, error: GatewayError | None) -> None:
        span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.set_attribute("error.type", error_type(error))
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, error.message))

    def _end_json(self, ctx: RequestContext, span: Span, response: JsonResult) -> None:
        self._error(span, response.status, response.error)
        body = response.body
        if response.error is None:
            if isinstance(body.get("id"), str):
                span.set_attribute("gen_ai.response.id", body["id"])
            if isinstance(body.get("model"), str):
                span.set_attribute("gen_ai.response.model", body["model"])
            choices = body.get("choices")
            if isinstance(choices, list):
                reasons = [
                    str(c.get("finish_reason")) for c in choices if isinstance(c, dict) and c.get("finish_reason")
                ]
                if reasons:
                    span.set_attribute("gen_ai.response.finish_reasons", reasons)
                if self.config.capture_content:
                    span.set_attribute("gen_ai.output.messages", json.dumps(_outputs(choices), ensure_ascii=False))
            self._usage(span, body.get("usage"))
        span.end()

    def _end_stream(self, ctx: RequestContext, span: Span, outcome: StreamOutcome) -> None:
        served = self.deployments.get(ctx.deployment or "")
        if served is not None:
            span.set_attribute("gen_ai.response.model", served.model)
        if outcome.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [outcome.finish_reason])
        if outcome.first_chunk_at is not None:
            span.set_attribute(
                "opsgate.time_to_first_token_ms", round((outcome.first_chunk_at - ctx.started) * 1000, 3)
            )
        self._usage(span, outcome.usage)
        if outcome.error is not None:
            self._error(span, outcome.error.status, outcome.error)
        elif not outcome.completed:
            span.set_attributes({"http.response.status_code": 499, "error.type": "client_disconnected"})
        else:
            span.set_attribute("http.response.status_code", 200)
        if self.config.capture_content:
            output = [{"role": "assistant", "parts": [{"type": "text", "content": outcome.text()}]}]
            if outcome.finish_reason:
                output[0]["finish_reason"] = outcome.finish_reason
            span.set_attribute("gen_ai.output.messages", json.dumps(output, ensure_ascii=False))
        span.end()

    # -- upstream attempts (the router's AttemptTracer) ---------------------------------------------

    async def attempt(self, ctx: RequestContext, deployment: str, number: int, call: Coroutine[Any, Any, T]) -> T:
        """Await one upstream attempt inside a CLIENT span ``{operation} {upstream model}``."""
        parent = ctx.scratch.get(_PARENT)
        if parent is None or not parent.is_recording():
            return await call
        target = self.deployments.get(deployment)
        operation = OPERATIONS.get(ctx.endpoint, ctx.endpoint)
        model = target.model if target else deployment
        span = self.tracer.start_span(
            f"{operation} {model}",
            context=set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": target.provider if target else "opsgate",
                "gen_ai.request.model": model,
                "opsgate.deployment": deployment,
                "opsgate.attempt": number,
            },
        )
        try:
            return await call
        except BaseException as error:
            span.set_attribute("error.type", error_type(error))
            span.set_status(Status(StatusCode.ERROR, str(getattr(error, "message", "")) or type(error).__name__))
            raise
        finally:
            span.end()


def _outputs(choices: list[Any]) -> list[dict[str, Any]]:
    """Choices in the ``gen_ai.output.messages`` shape."""
    out: list[dict[str, Any]] = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        out.append(
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": text or ""}],
                "finish_reason": choice.get("finish_reason"),
            }
        )
    return out
