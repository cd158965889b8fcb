"""Stage: build one record per request (success, error, short-circuit, stream) and hand it to a sink.

The sink only enqueues (the durable one appends to a journal), so the response never waits on
storage. The stage sits near the front of the pipeline on purpose: its ``after`` runs last and
sees the final response, whichever stage produced it.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Protocol

from opsgate.domain.config import GatewayConfig
from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext, StreamOutcome, StreamResult
from opsgate.domain.pricing import MAX_COUNT, PriceBook, countable_usage, stored_count
from opsgate.domain.requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from opsgate.pipeline.request_id import client_request_id
from opsgate.pipeline.stage import PassStage
from opsgate.slo.quality import quality_flags
from opsgate.store.backlog import BacklogGate, RecordBacklogFull
from opsgate.store.nesting import bounded_record_json
from opsgate.store.record_log import essentials

RequestRecord = dict[str, Any]
log = logging.getLogger("opsgate.pipeline.record")


class RecordSink(Protocol):
    """Where records go. ``write`` must not block: enqueue, never wait on a database."""

    def write(self, record: RequestRecord) -> None:
        """Accept one record."""
        ...


class LogSink:
    """Writes each record as one JSON line on the ``opsgate.requests`` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("opsgate.requests")

    def write(self, record: RequestRecord) -> None:
        """Log the record if the logger is enabled for INFO (serialising only then)."""
        if self._log.isEnabledFor(logging.INFO):
            self._log.info(bounded_record_json(record).decode())


class MemorySink:
    """Keeps the last ``size`` records in memory (tests, and a quick look in a debugger)."""

    def __init__(self, size: int = 1000) -> None:
        self.records: deque[RequestRecord] = deque(maxlen=size)

    def write(self, record: RequestRecord) -> None:
        """Append the record."""
        self.records.append(record)


class FanoutSink:
    """Writes every record to several sinks; one sink's failure costs neither the others nor the client."""

    def __init__(self, *sinks: RecordSink) -> None:
        self.sinks = sinks
        self.failures: dict[str, int] = {}  # by sink class name

    @property
    def backlog_gate(self) -> BacklogGate | None:
        """The first sink's journal backlog gate (the durable request log's), if any sink has one."""
        for sink in self.sinks:
            gate = getattr(sink, "backlog_gate", None)
            if isinstance(gate, BacklogGate):
                return gate
        return None

    def write(self, record: RequestRecord) -> None:
        """Write to each sink, logging and counting any that fails."""
        for sink in self.sinks:
            try:
                sink.write(record)
            except Exception:
                name = type(sink).__name__
                self.failures[name] = self.failures.get(name, 0) + 1
                log.exception("record sink %s failed on request %s", name, record.get("id"))


def input_text(body: object) -> str | None:
    """The searchable text of a request: message texts, the prompt, or the embedding inputs."""
    if isinstance(body, ChatCompletionRequest):
        return "\n".join(m.text() for m in body.messages)
    if isinstance(body, CompletionRequest):
        return body.prompt_text()
    if isinstance(body, EmbeddingRequest):
        inputs = [body.input] if isinstance(body.input, str) else body.input
        return "\n".join(i for i in inputs if isinstance(i, str)) or None
    return None


def logprob_summary(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean and minimum token logprob, the part of logprobs worth keeping in a record."""
    values = [e["logprob"] for e in entries if isinstance(e, dict) and "logprob" in e]
    if not values:
        return None
    return {"tokens": len(values), "mean": sum(values) / len(values), "min": min(values)}


def _refusal_field(body: dict[str, Any]) -> Any:
    """The chat answer's ``refusal`` field (structured outputs: the model declined in its own field)."""
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict):
            return message.get("refusal")
    return None


def _response_payload(endpoint: str, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """What of a JSON answer is kept (embedding vectors are not) and its output text."""
    if endpoint == "embedding":
        data = body.get("data") or []
        dims = len(data[0].get("embedding") or []) if data else 0
        return {"embeddings": len(data), "dimensions": dims}, None
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    text = message.get("content") if isinstance(message, dict) else None
    if text is None:
        text = choice.get("text")
    payload: dict[str, Any] = {"content": text, "finish_reason": choice.get("finish_reason")}
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict):
        entries = logprobs.get("content")
        if entries is None and logprobs.get("token_logprobs"):
            entries = [{"logprob": v} for v in logprobs["token_logprobs"] if v is not None]
        payload["logprobs"] = logprob_summary(entries or [])
    return payload, text if isinstance(text, str) else None


def record_tags(ctx: RequestContext) -> dict[str, Any] | None:
    """The record's ``tags``: the context's tags, plus ``cache_hit`` for a hit (readers of stored
    records look for it there), placed before ``saved_cost`` where the cache stage used to put it."""
    if not ctx.cache_hit:
        return dict(ctx.tags) or None
    tags: dict[str, Any] = {}
    for key, value in ctx.tags.items():
        if key == "saved_cost":
            tags["cache_hit"] = True
        tags[key] = value
    tags.setdefault("cache_hit", True)
    return tags


def _stored(value: Any) -> int | None:
    """``stored_count``, with the usual case (a plain int in range) first."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    return stored_count(value)


# ``ctx.scratch`` key: the request was refused by the backlog gate, so its record keeps only the essentials.
SHED = "record_backlog"


class RecordAdmissionStage(PassStage):
    """Refuses what would grow an over-bound journal (``store/backlog.py``): large bodies first, then all.

    It sits right after auth, so a refusal is recorded under the caller's key, and before validation,
    so a refused multi-MB body is never parsed. The refusal is an overload (503, ``Retry-After``),
    and its record holds no payload (``RecordStage`` writes the essentials).
    """

    name = "record_admission"

    def __init__(self, gate: BacklogGate) -> None:
        self.gate = gate

    def status(self) -> dict[str, Any] | None:
        """Not listed apart: ``/readyz`` shows the gate under ``record.backlog``."""
        return None

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """Admit, or answer 503 ``record_backlog`` and mark the record payload-free."""
        error = self.gate.refusal(len(ctx.raw_body))
        if error is None:
            return None
        ctx.scratch[SHED] = error
        return JsonResult.from_error(error)


class RecordStage(PassStage):
    """Builds a record from the context and the final response and hands it to the sink."""

    name = "record"

    def __init__(self, config: GatewayConfig, sink: RecordSink) -> None:
        self.sink = sink
        self.prices = PriceBook(config)
        self.metadata_only = config.record.payloads == "metadata_only"
        self.sink_failures = 0
        gate = getattr(sink, "backlog_gate", None)
        # The admission stage the pipeline places after auth, when the sink journals records.
        self.admission = RecordAdmissionStage(gate) if isinstance(gate, BacklogGate) else None

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        """Record now for a JSON answer; for a stream, when it ends."""
        shed = ctx.scratch.get(SHED)
        if isinstance(shed, RecordBacklogFull) and isinstance(response, JsonResult):
            self._write(self._shed_record(ctx, response, shed))
            return response
        if isinstance(response, StreamResult):
            response.on_finish.append(lambda outcome: self._record_stream(ctx, outcome))
            return response
        self._record_json(ctx, response)
        return response

    def _base(self, ctx: RequestContext) -> RequestRecord:
        body = ctx.body
        model = getattr(body, "model", None)
        request = None
        if body is not None and not self.metadata_only:
            # model_dump(mode="json", exclude_unset=True) without its Python wrapper (~1 µs a request)
            request = body.__pydantic_serializer__.to_python(body, mode="json", exclude_unset=True)
        return {
            "id": ctx.request_id,
            "client_request_id": client_request_id(ctx.headers),
            "ts": ctx.received_at,
            "tenant": ctx.tenant,
            "api_key_id": ctx.api_key_id,
            "user_id": getattr(body, "user", None),
            "endpoint": ctx.endpoint,
            "model": model,
            "deployment": ctx.deployment,
            "stream": bool(getattr(body, "stream", False)),
            "cached": ctx.cache_hit,
            "latency_ms": round(ctx.elapsed_ms(), 3),
            "input_text": None if self.metadata_only else input_text(body),
            "request": request,
            "metadata": getattr(body, "metadata", None),
            "tags": record_tags(ctx),
            # What the release stage applied (pipeline/release.py), as columns for reports and searches.
            "prompt": ctx.tags.get("prompt"),
            "prompt_version": ctx.tags.get("prompt_version"),
            "release_id": ctx.tags.get("release"),
            "experiment": ctx.tags.get("experiment"),
            "arm": ctx.tags.get("arm"),
        }

    def _cost(self, ctx: RequestContext, record: RequestRecord, usage: dict[str, Any] | None) -> float | None:
        # A cache hit costs nothing; what it saved is in the tags (saved_cost).
        if ctx.cache_hit:
            return 0.0
        if not countable_usage(usage):
            return None  # counts the upstream sent as text or objects: the cost is unknown, not an error
        # What served (the deployment's own price, fallbacks included), as the budgets count it.
        return self.prices.cost(ctx.alias.name if ctx.alias else record["model"], ctx.deployment, usage)

    @staticmethod
    def _usage(record: RequestRecord, usage: dict[str, Any] | None) -> None:
        # Integral counts in range only: PostgreSQL's INTEGER columns refuse 1.5, true, 2**64 or text,
        # and a refused line is set aside, not stored. What an upstream sent otherwise is unknown (NULL),
        # with a tag saying so.
        usage = usage if isinstance(usage, dict) else {}
        details = usage.get("prompt_tokens_details")
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        record["prompt_tokens"] = stored_prompt = _stored(prompt)
        record["completion_tokens"] = stored_completion = _stored(completion)
        record["cached_tokens"] = stored_cached = _stored(cached)
        if (
            (stored_prompt is None and prompt is not None)
            or (stored_completion is None and completion is not None)
            or (stored_cached is None and cached is not None)
        ):
            tags = record.get("tags")
            record["tags"] = {**(tags if isinstance(tags, dict) else {}), "usage_not_counts": True}

    def _minimal(self, ctx: RequestContext, status: int, error: Exception) -> RequestRecord:
        """The facts that cannot fail to build, for when the full record did (odd input or upstream output):
        a request answered is recorded, whatever its body held."""
        log.exception("request %s: building its record failed; recording the essentials", ctx.request_id)
        model = getattr(ctx.body, "model", None)
        record = self._plain_fields(ctx, status, model if isinstance(model, str) else None)
        record["tags"] = {"record_error": f"{type(error).__name__}: {error}"[:500]}
        return record

    def _shed_record(self, ctx: RequestContext, response: JsonResult, error: RecordBacklogFull) -> RequestRecord:
        """The essentials of a request the backlog gate refused: no payload, so refusing grows nothing much."""
        # Refused before validation: the body was never parsed, so no model either.
        record = essentials(self._plain_fields(ctx, response.status, None), error)
        record["error_type"] = error.error_type
        record["error_message"] = error.operator_message or error.message
        return record

    @staticmethod
    def _plain_fields(ctx: RequestContext, status: int, model: str | None) -> RequestRecord:
        """The columns that cannot fail to build, from the context alone."""
        return {
            "id": ctx.request_id,
            "client_request_id": client_request_id(ctx.headers),
            "ts": ctx.received_at,
            "tenant": ctx.tenant,
            "api_key_id": ctx.api_key_id,
            "endpoint": ctx.endpoint,
            "model": model,
            "deployment": ctx.deployment,
            "status": status,
            "latency_ms": round(ctx.elapsed_ms(), 3),
        }

    def _record_json(self, ctx: RequestContext, response: JsonResult) -> None:
        try:
            record = self._build_json(ctx, response)
        except Exception as error:
            record = self._minimal(ctx, response.status, error)
        self._write(record)

    def _build_json(self, ctx: RequestContext, response: JsonResult) -> RequestRecord:
        record = self._base(ctx)
        record["status"] = response.status
        text: str | None = None
        refusal: Any = None
        if response.error is not None:
            record["error_type"] = response.error.error_type
            record["error_message"] = response.error.operator_message or response.error.message
            self._usage(record, None)
        else:
            usage = response.body.get("usage")
            self._usage(record, usage)
            record["cost"] = self._cost(ctx, record, usage)
            payload, text = _response_payload(ctx.endpoint, response.body)
            refusal = _refusal_field(response.body)
            record["finish_reason"] = payload.get("finish_reason")
            if not self.metadata_only:
                record["response"] = payload
                record["output_text"] = text
        record["quality_flags"] = quality_flags(
            ctx.tags.get("guard"),
            ctx.endpoint,
            response.status,
            text,
            refusal,
            record.get("finish_reason"),
        )
        return record

    def _record_stream(self, ctx: RequestContext, outcome: StreamOutcome) -> None:
        try:
            record = self._build_stream(ctx, outcome)
        except Exception as error:
            status = outcome.error.status if outcome.error is not None else 200 if outcome.completed else 499
            record = self._minimal(ctx, status, error)
        self._write(record)

    def _write(self, record: RequestRecord) -> None:
        # The answer stands whatever a sink does with its record (a FanoutSink already isolates its own).
        try:
            self.sink.write(record)
        except Exception:
            self.sink_failures += 1
            log.exception("request %s: the record sink failed", record.get("id"))

    def _build_stream(self, ctx: RequestContext, outcome: StreamOutcome) -> RequestRecord:
        record = self._base(ctx)
        if outcome.first_chunk_at is not None:
            record["ttft_ms"] = round((outcome.first_chunk_at - ctx.started) * 1000.0, 3)
        self._usage(record, outcome.usage)
        record["cost"] = self._cost(ctx, record, outcome.usage)
        record["finish_reason"] = outcome.finish_reason
        text = outcome.text()
        if not self.metadata_only:
            record["output_text"] = text
            record["response"] = {
                "content": text,
                "finish_reason": outcome.finish_reason,
                "partial": not outcome.completed,
            }
        if outcome.error is not None:
            record["status"] = outcome.error.status
            record["error_type"] = outcome.error.error_type
            record["error_message"] = outcome.error.operator_message or outcome.error.message
        elif not outcome.completed:
            record["status"] = 499  # the client went away before the stream ended
            record["error_type"] = "client_disconnected"
            record["error_message"] = "the client closed the connection mid-stream"
        else:
            record["status"] = 200
        record["quality_flags"] = quality_flags(
            ctx.tags.get("guard"), ctx.endpoint, record["status"], text, None, outcome.finish_reason
        )
        return record
