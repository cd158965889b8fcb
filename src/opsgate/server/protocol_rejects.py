"""Requests the HTTP layer refuses before any app code runs: recorded and counted like any other request.

uvicorn's httptools protocol answers a request llhttp cannot parse (``Content-Length`` beside
``Transfer-Encoding``, a malformed request line, a NUL in a header, a bad chunk size...) with a plain-text
400 and closes; the head limits (``server/http_limits.py``) answer 431 and 408. None of these reach the
app, so they were in neither the request log nor ``/metrics``. ``RejectLog`` is where the protocol hands
them instead:

- every refusal is counted in ``opsgate_requests_total{endpoint="http"}`` (the metrics sink's own series,
  summed across ``--workers`` like any request), with its status;
- it is recorded as a request with ``endpoint: "http"``, ``error_type: "invalid_http"``, the status, the
  parser's reason (``error_message``; ``tags.reason`` a fixed category) and the client address
  (``tags.client``, ``tags.client_port``), plus the method and path when the parser got that far. All of
  it is sanitised: printable ASCII (other bytes as ``\\xNN``), bounded in length.

A client can open connections and send garbage faster than the gateway serves real requests, and each
record is a journal line and a row: records are rate-limited per client address (a token bucket, IPv6
by /64) and overall. Refusals over the limit are not dropped but aggregated: one summary record per
address every ``flush_seconds`` (``tags.aggregated`` = how many it stands for, by reason and status),
so the request log holds every refusal, one by one or counted, and grows by a bounded number of rows
a second whatever a flood sends. The metric counts each one. Per process: each ``--workers`` process
keeps its own limits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import httptools
from starlette.requests import Request

from opsgate.domain.errors import GatewayError
from opsgate.pipeline.record import FanoutSink, RecordSink, RequestRecord
from opsgate.pipeline.request_id import client_request_id
from opsgate.telemetry.metrics import RequestMetrics

log = logging.getLogger("opsgate.server")

ENDPOINT = "http"  # the record's endpoint: refused before any route
ERROR_TYPE = "invalid_http"

# Records written one by one: per client address, then overall (records a second, burst).
CLIENT_BURST = 10
CLIENT_RATE = 1.0
TOTAL_BURST = 100
TOTAL_RATE = 10.0
MAX_CLIENTS = 4096  # addresses tracked; past that, new ones share one bucket (``OTHER``)
FLUSH_SECONDS = 10.0
MAX_SUMMARIES = 32  # summary records per flush; the addresses past these are summed into one more
OTHER = "*"
MAX_MERGED_IDS = 256  # ids listed in the one summary of the addresses past MAX_SUMMARIES

MESSAGE_CHARS = 300
PATH_CHARS = 200

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# The parser's reason (llhttp's fixed strings, lower-cased) → a category for tags.reason; first match wins.
_CATEGORIES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("content-length", "transfer-encoding"), "conflicting_length"),
    (("chunk",), "invalid_chunk"),
    (("content-length",), "invalid_content_length"),
    (("transfer-encoding",), "invalid_transfer_encoding"),
    (("method",), "invalid_method"),
    (("url",), "invalid_url"),
    (("header",), "invalid_header"),
    (("start line",), "invalid_header"),
    (("version",), "invalid_version"),
    (("lf",), "invalid_line_ending"),
)


def printable(raw: bytes | str | None, limit: int) -> str | None:
    """``raw`` as printable ASCII (other bytes and characters escaped), at most ``limit`` characters.

    Attacker-chosen bytes end up in the store, the logs and the dashboard: no NUL (PostgreSQL refuses
    it), no broken UTF-8, no line breaks or terminal escapes, nothing unbounded.
    """
    if raw is None:
        return None
    head = raw[: limit + 1]
    text = (
        head.decode("ascii", "backslashreplace")
        if isinstance(head, bytes)
        else head.encode("ascii", "backslashreplace").decode("ascii")
    )
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if len(text) > limit or len(raw) > limit:
        return text[: max(0, limit - 3)] + "..."
    return text


def classify(error: BaseException) -> tuple[int, str, str]:
    """(status, category, sanitised reason) for an exception httptools raised while parsing."""
    if isinstance(error, httptools.HttpParserCallbackError):
        # One of uvicorn's parser callbacks raised: the URL it could not take apart is the client's
        # fault; anything else is ours.
        cause = error.__cause__ or error.__context__
        text = printable(f"{type(cause).__name__}: {cause}", MESSAGE_CHARS) or ""
        if isinstance(cause, httptools.HttpParserInvalidURLError | UnicodeError):
            return 400, "invalid_url", text
        return 500, "internal_error", text
    message = printable(str(error), MESSAGE_CHARS) or ""
    if isinstance(error, httptools.HttpParserInvalidMethodError):
        return 400, "invalid_method", message
    if isinstance(error, httptools.HttpParserInvalidURLError):
        return 400, "invalid_url", message
    lowered = message.lower()
    for needles, category in _CATEGORIES:
        if all(needle in lowered for needle in needles):
            return 400, category, message
    return 400, "malformed", message


def client_key(host: str | None) -> str:
    """The rate-limit key of a client address: itself for IPv4, its /64 for IPv6 (one host holds a /64)."""
    if not host:
        return "unknown"
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host[:64]
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


@dataclass(frozen=True, slots=True)
class ProtocolReject:
    """One request refused by the HTTP layer. Text fields are raw from the wire: ``RejectLog`` cleans them."""

    status: int
    reason: str  # a category: conflicting_length, invalid_chunk, ..., head_too_large, head_timeout
    message: str
    client: tuple[str, int] | None
    method: bytes | str | None = None
    path: bytes | None = None
    dispatched: bool = False  # the head had reached the app (the refusal is in its body): the app saw a disconnect
    client_request_id: str | None = None
    latency_ms: float | None = None
    error_type: str = ERROR_TYPE  # ``not_found``/``method_not_allowed`` for a route the app does not have


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    suppressed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    first: float = 0.0
    last: float = 0.0
    summary_id: str | None = None  # the id of the summary that will stand for what was aggregated
    merged_ids: list[str] = field(default_factory=list)  # summaries merged into this one (past MAX_SUMMARIES)

    def take(self, now: float, rate: float, burst: int) -> bool:
        self.tokens = min(float(burst), self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def full(self, now: float, rate: float, burst: int) -> bool:
        return self.suppressed == 0 and self.tokens + (now - self.at) * rate >= burst


class RejectLog:
    """Counts every refusal, records them one by one within the rate limits, and the rest as summaries."""

    def __init__(
        self,
        records: RecordSink | None,
        metrics: RequestMetrics | None,
        *,
        client_burst: int = CLIENT_BURST,
        client_rate: float = CLIENT_RATE,
        total_burst: int = TOTAL_BURST,
        total_rate: float = TOTAL_RATE,
        max_clients: int = MAX_CLIENTS,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.records = records
        self.metrics = metrics
        self.client_burst, self.client_rate = client_burst, client_rate
        self.total_burst, self.total_rate = total_burst, total_rate
        self.max_clients = max_clients
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._clients: dict[str, _Bucket] = {}
        self._total = _Bucket(float(total_burst), clock())
        self._timer: asyncio.TimerHandle | None = None
        self._prefix = os.urandom(8).hex()  # ids shaped like the pipeline's (pipeline/request_id.py)
        self._ids = count(1)
        self.counts = {"refused": 0, "recorded": 0, "aggregated": 0, "summaries": 0}

    def status(self) -> dict[str, int]:
        """Refusals seen, recorded one by one, aggregated; summaries written; addresses tracked now."""
        return {**self.counts, "clients": len(self._clients)}

    @classmethod
    def for_gateway(cls, gateway: Any, **limits: Any) -> RejectLog:
        """One for a ``server.app.Gateway``: records to its sinks, counted by its metrics (``limits``: the
        keyword arguments of ``__init__``)."""
        metrics: RequestMetrics | None = gateway.telemetry.metrics
        fanout: FanoutSink = gateway.sink
        # Every sink but the metrics (which count each refusal, recorded or not, in ``add``); failures
        # are counted where /readyz reads them.
        records = FanoutSink(*(sink for sink in fanout.sinks if sink is not metrics))
        records.failures = fanout.failures
        return cls(records, metrics, **limits)

    def add(self, reject: ProtocolReject) -> str | None:
        """Count and record (or aggregate) one refusal; the id of its record, or of the summary standing for it."""
        self.counts["refused"] += 1
        if self.metrics is not None:
            self.metrics.write({"endpoint": ENDPOINT, "status": reject.status, "latency_ms": reject.latency_ms})
        host = reject.client[0] if reject.client else None
        key = client_key(host)
        now = self._clock()
        bucket = self._clients.get(key)
        if bucket is None:
            if len(self._clients) >= self.max_clients:
                key = OTHER
                bucket = self._clients.get(key)
            if bucket is None:
                bucket = self._clients[key] = _Bucket(float(self.client_burst), now)
        self._arm()
        if bucket.take(now, self.client_rate, self.client_burst) and self._total.take(
            now, self.total_rate, self.total_burst
        ):
            return self._record(reject)
        self.counts["aggregated"] += 1
        wall = time.time()
        if bucket.suppressed == 0:
            bucket.first = wall
            # Answered now with the id its summary will be written under, so a client quoting it finds
            # the record that stands for its request.
            bucket.summary_id = self.new_id()
        bucket.last = wall
        bucket.suppressed += 1
        bucket.reasons[reject.reason] = bucket.reasons.get(reject.reason, 0) + 1
        status = str(reject.status)
        bucket.statuses[status] = bucket.statuses.get(status, 0) + 1
        return bucket.summary_id

    def new_id(self) -> str:
        """A request id shaped like the pipeline's, unique in this process."""
        return f"{self._prefix}{next(self._ids):08x}"

    def _record(self, reject: ProtocolReject) -> str:
        record_id = self.new_id()
        host, port = reject.client if reject.client else (None, None)
        method = reject.method
        tags: dict[str, Any] = {"client": printable(host, 64), "client_port": port, "reason": reject.reason}
        if method:
            tags["method"] = printable(method, 32)
        if reject.path:
            tags["path"] = printable(reject.path, PATH_CHARS)
        if reject.dispatched:
            tags["dispatched"] = True
        message = printable(reject.message, MESSAGE_CHARS)
        self._write(
            {
                **_RECORD_BASE,
                "id": record_id,
                "client_request_id": client_request_id({"x-request-id": reject.client_request_id or ""}),
                "ts": time.time(),
                "status": reject.status,
                "error_type": reject.error_type,
                "error_message": message,
                "latency_ms": None if reject.latency_ms is None else round(reject.latency_ms, 3),
                "tags": tags,
            }
        )
        self.counts["recorded"] += 1
        log.info("HTTP request from %s refused (%d %s): %s", tags["client"], reject.status, reject.reason, message)
        return record_id

    def _write(self, record: RequestRecord) -> None:
        if self.records is None:
            return
        try:
            self.records.write(record)
        except Exception:  # a FanoutSink isolates its own sinks; any other must not fail the refusal
            log.exception("record of a refused HTTP request %s failed", record["id"])

    # Summaries

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_seconds, self.flush)

    def flush(self) -> None:
        """Write the summaries of what was aggregated; forget addresses whose buckets are full again."""
        self._timer = None
        now = self._clock()
        pending = sorted(
            ((key, bucket) for key, bucket in self._clients.items() if bucket.suppressed),
            key=lambda item: -item[1].suppressed,
        )
        rest = _Bucket(0.0, now)
        for _key, bucket in pending[MAX_SUMMARIES:]:
            _merge(rest, bucket)
            _reset(bucket)
        if rest.suppressed:
            pending = [*pending[:MAX_SUMMARIES], (OTHER, rest)]
        for key, bucket in pending[: MAX_SUMMARIES + 1]:
            self._summary(key, bucket)
            _reset(bucket)
        for key in [k for k, b in self._clients.items() if b.full(now, self.client_rate, self.client_burst)]:
            del self._clients[key]
        if self._clients:
            self._arm()

    def _summary(self, key: str, bucket: _Bucket) -> None:
        status = max(bucket.statuses, key=lambda s: bucket.statuses[s])
        reason = max(bucket.reasons, key=lambda r: bucket.reasons[r])
        client = printable(key, 64)
        by_reason = ", ".join(f"{r} {n}" for r, n in sorted(bucket.reasons.items(), key=lambda item: -item[1]))
        message = (
            f"{bucket.suppressed} requests from {client} refused by the HTTP layer past the record rate limits "
            f"(this record stands for them; each is counted in /metrics): {by_reason}"
        )
        tags: dict[str, Any] = {
            "client": client,
            "reason": reason,
            "aggregated": bucket.suppressed,
            "reasons": dict(bucket.reasons),
            "statuses": dict(bucket.statuses),
            "first_ts": bucket.first,
            "last_ts": bucket.last,
        }
        summary_id = bucket.summary_id or self.new_id()
        if bucket.merged_ids:
            # Addresses past MAX_SUMMARIES: their clients were answered with their own summaries' ids, listed
            # here, MAX_MERGED_IDS a record (the rest in records that continue this one: every id is findable).
            tags["request_ids"] = bucket.merged_ids[:MAX_MERGED_IDS]
            for start in range(MAX_MERGED_IDS, len(bucket.merged_ids), MAX_MERGED_IDS):
                self._write(
                    {
                        **_RECORD_BASE,
                        "id": self.new_id(),
                        "ts": time.time(),
                        "status": int(status),
                        "error_type": "summary_continuation",  # not a refusal of its own: counted in its summary
                        "error_message": f"continues the summary {summary_id}: the ids it answered",
                        "tags": {
                            "client": client,
                            "aggregated": 0,
                            "continues": summary_id,
                            "request_ids": bucket.merged_ids[start : start + MAX_MERGED_IDS],
                        },
                    }
                )
        self._write(
            {
                **_RECORD_BASE,
                "id": summary_id,
                "ts": time.time(),
                "status": int(status),
                "error_message": message[:MESSAGE_CHARS],
                "tags": tags,
            }
        )
        self.counts["summaries"] += 1
        log.warning("%s", message)


_RECORD_BASE: RequestRecord = {
    "tenant": None,
    "api_key_id": None,
    "user_id": None,
    "endpoint": ENDPOINT,
    "model": None,
    "deployment": None,
    "stream": False,
    "cached": False,
    "error_type": ERROR_TYPE,
    "latency_ms": None,
    "quality_flags": 0,
}


def _merge(into: _Bucket, bucket: _Bucket) -> None:
    if not into.suppressed or bucket.first < into.first:
        into.first = bucket.first
    into.last = max(into.last, bucket.last)
    into.suppressed += bucket.suppressed
    if bucket.summary_id is not None:
        into.merged_ids.append(bucket.summary_id)
    for reason, n in bucket.reasons.items():
        into.reasons[reason] = into.reasons.get(reason, 0) + n
    for status, n in bucket.statuses.items():
        into.statuses[status] = into.statuses.get(status, 0) + n


def _reset(bucket: _Bucket) -> None:
    bucket.suppressed = 0
    bucket.summary_id = None
    bucket.merged_ids = []
    bucket.reasons = {}
    bucket.statuses = {}


def reject_log_of(app: Any) -> RejectLog | None:
    """The ``RejectLog`` of the gateway behind uvicorn's app (through its wrappers), made on first use;
    None for an app that is not a gateway's."""
    for _ in range(8):
        state = getattr(app, "state", None)
        gateway = getattr(state, "gateway", None)
        if state is not None and gateway is not None:
            rejects: RejectLog | None = getattr(state, "protocol_rejects", None)
            if rejects is None:
                rejects = state.protocol_rejects = RejectLog.for_gateway(gateway)
            return rejects
        app = getattr(app, "app", None)  # uvicorn's ProxyHeadersMiddleware and the like
        if app is None:
            break
    return None


def record_route_miss(request: Request, error: GatewayError) -> str | None:
    """Count and record a request for a route the app does not have (404) or a method it refuses (405).

    Such a request reaches no handler, so nothing else records it. It goes through the same rate limits as
    the HTTP layer's refusals: a scanner walking paths leaves summaries, not a row per probe. Returns the
    record's id when it was recorded on its own.
    """
    reason = "unknown_route" if error.status == 404 else "method_not_allowed"
    return record_unhandled(request, error, reason)


def record_unhandled(request: Request, error: GatewayError, reason: str) -> str | None:
    """Count and record a request answered with ``error`` before any handler (``reason``: ``tags.reason``),
    rate-limited like the HTTP layer's refusals; its record id when recorded on its own."""
    rejects = reject_log_of(request.scope.get("app"))
    if rejects is None:
        return None
    client = request.client
    return rejects.add(
        ProtocolReject(
            status=error.status,
            reason=reason,
            message=error.message,
            client=(client.host, client.port) if client is not None else None,
            method=request.method,
            path=request.scope.get("raw_path") or request.url.path.encode("utf-8", "surrogateescape"),
            client_request_id=request.headers.get("x-request-id"),
            error_type=error.code or error.error_type,
        )
    )
