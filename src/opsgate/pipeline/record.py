"""Stage: write one record per request (success, error, short-circuit, stream) to a sink.

This is the minimal hook the durable request log plugs into: the sink only enqueues, so the
response never waits on storage. It sits near the front of the pipeline on purpose: its ``after``
runs last and sees the final response, whichever stage produced it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Protocol

import orjson

from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext, StreamOutcome, StreamResult
from opsgate.pipeline.stage import PassStage

RequestRecord = dict[str, Any]


class RecordSink(Protocol):
    """Where records go. ``write`` must not block: enqueue, never do I/O inline."""

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
            self._log.info(orjson.dumps(record).decode())


class MemorySink:
    """Keeps the last ``size`` records in memory (tests, and a quick look in a debugger)."""

    def __init__(self, size: int = 1000) -> None:
        self.records: deque[RequestRecord] = deque(maxlen=size)

    def write(self, record: RequestRecord) -> None:
        """Append the record."""
        self.records.append(record)


class FanoutSink:
    """Writes every record to several sinks."""

    def __init__(self, *sinks: RecordSink) -> None:
        self.sinks = sinks

    def write(self, record: RequestRecord) -> None:
        """Write to each sink."""
        for sink in self.sinks:
            sink.write(record)


def _base_record(ctx: RequestContext) -> RequestRecord:
    body = ctx.body
    return {
        "id": ctx.request_id,
        "ts": ctx.received_at,
        "endpoint": ctx.endpoint,
        "model": getattr(body, "model", None),
        "deployment": ctx.deployment,
        "user": getattr(body, "user", None),
        "stream": bool(getattr(body, "stream", False)),
        "metadata": getattr(body, "metadata", None),
        "tags": ctx.tags or None,
    }


class RecordStage(PassStage):
    """Builds a record from the context and the final response and hands it to the sink."""

    name = "record"

    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        """Record now for a JSON answer; for a stream, when it ends."""
        if isinstance(response, StreamResult):
            response.on_finish.append(lambda outcome: self._record_stream(ctx, outcome))
            return response
        self._record_json(ctx, response)
        return response

    def _record_json(self, ctx: RequestContext, response: JsonResult) -> None:
        record = _base_record(ctx)
        record["status"] = response.status
        record["latency_ms"] = round(ctx.elapsed_ms(), 3)
        if response.error is not None:
            record["error_type"] = response.error.error_type
            record["error"] = response.error.message
        else:
            record["usage"] = response.body.get("usage")
            choices = response.body.get("choices") or [{}]
            record["finish_reason"] = choices[0].get("finish_reason")
        self.sink.write(record)

    def _record_stream(self, ctx: RequestContext, outcome: StreamOutcome) -> None:
        record = _base_record(ctx)
        record["latency_ms"] = round(ctx.elapsed_ms(), 3)
        if outcome.first_chunk_at is not None:
            record["ttft_ms"] = round((outcome.first_chunk_at - ctx.started) * 1000.0, 3)
        record["usage"] = outcome.usage
        record["finish_reason"] = outcome.finish_reason
        record["output_chars"] = sum(len(piece) for piece in outcome.content)
        if outcome.error is not None:
            record["status"] = outcome.error.status
            record["error_type"] = outcome.error.error_type
            record["error"] = outcome.error.message
        elif not outcome.completed:
            record["status"] = 499  # the client went away before the stream ended
            record["error_type"] = "client_disconnected"
        else:
            record["status"] = 200
        record["recorded_at"] = time.time()
        self.sink.write(record)
