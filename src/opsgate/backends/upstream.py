"""An OpenAI-compatible upstream (vLLM, Ollama, llama.cpp server, OpenAI) over a pooled HTTP client.

aiohttp is used rather than httpx on purpose: at the gateway's target of thousands of requests a
second on one core, httpx's per-request cost was the bottleneck; aiohttp's pool is several times
cheaper. Upstream API keys live only in request headers, never in logs or errors.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from opsgate.backends.base import AnswerTooLarge, Backend, RequestTooLargeForUpstream, UpstreamConnectTimeout
from opsgate.backends.upstream_read import LineTooLong, chunk_problem, read_bounded, read_lines
from opsgate.domain.config import UpstreamDeployment
from opsgate.domain.context import Chunk, RequestContext
from opsgate.domain.errors import GatewayError, InvalidRequestError, UpstreamError, UpstreamTimeoutError
from opsgate.domain.urls import redact_url

_PATHS = {"chat": "/chat/completions", "completion": "/completions", "embedding": "/embeddings"}
_GATEWAY_ONLY_FIELDS = ("metadata",)  # ours (tags for the record), not the upstream's
log = logging.getLogger("opsgate.backends.upstream")


@dataclass(frozen=True)
class Phase:
    """What the client was doing when aiohttp failed, in the words its errors use."""

    timed_out: str  # "did not answer in time"
    broke: str  # "connection failed"


CONNECTING = Phase("did not answer in time", "connection failed")
READING = Phase("did not finish in time", "broke off the response")
STREAMING = Phase("stream stalled", "stream broke")


class map_exceptions:  # lower case: used like the function it replaced, ``with map_exceptions(...)``
    """The one translation of aiohttp's (and the socket's) errors into the gateway's.

    TLS failures, refused connections, timeouts (``started``: how long a stream waited) and any other
    client or socket error become ``UpstreamError``/``UpstreamTimeoutError``: a 502/504 the router may
    fall back from and the breaker counts, never an unexpected 500. A class, not a generator context
    manager: it wraps every upstream call, twice per request.
    """

    __slots__ = ("label", "phase", "started")

    def __init__(self, label: str, phase: Phase, started: float | None = None) -> None:
        self.label = label
        self.phase = phase
        self.started = started

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        if kind is None:
            return
        label, phase = self.label, self.phase
        if isinstance(error, aiohttp.ConnectionTimeoutError):  # connect or pool wait: nothing was sent
            raise UpstreamConnectTimeout(f"Upstream {label}: no connection in time") from None
        if issubclass(kind, TimeoutError):
            waited = f" after {time.perf_counter() - self.started:.1f}s" if self.started is not None else ""
            raise UpstreamTimeoutError(f"Upstream {label} {phase.timed_out}{waited}") from None
        if isinstance(error, aiohttp.ClientSSLError):  # before ClientConnectorError, its base class
            reason = getattr(error, "certificate_error", None) or error.os_error
            raise UpstreamError(
                f"TLS with upstream {label} failed: {reason}. If it uses a private CA, set verify_tls "
                "to the CA bundle's path.",
                code="upstream_tls_error",
            ) from None
        if isinstance(error, aiohttp.ClientConnectorError):
            raise UpstreamError(
                f"Cannot connect to upstream {label}: {error.os_error}", code="upstream_unreachable"
            ) from None
        if isinstance(error, (aiohttp.ClientError, OSError)):  # a reset socket may surface as a bare OSError
            raise UpstreamError(f"Upstream {label} {phase.broke}: {type(error).__name__}") from None
        if isinstance(error, HttpProcessingError):  # aiohttp's parser refused the answer (not a ClientError)
            raise UpstreamError(
                f"Upstream {label} sent an answer that cannot be read: {type(error).__name__}",
                code="upstream_bad_response",
            ) from None


# orjson writes no deeper than this: an answer past it could be read but not sent on to the client.
_RELAY_DEPTH = 254


def _too_deep(raw: bytes, data: object) -> bool:
    """Whether ``data`` (parsed from ``raw``) is nested too deep for the gateway to answer with."""
    # The bracket count bounds the depth and costs two C scans; only a body with that many brackets
    # (in strings too) is encoded once more to be sure.
    if raw.count(b"[") + raw.count(b"{") < _RELAY_DEPTH:
        return False
    try:
        orjson.dumps(data)
    except TypeError:  # orjson's JSONEncodeError: "Recursion limit reached"
        return True
    return False


def tls_option(deployment: UpstreamDeployment) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl`` argument: verify against the system CAs (the default), a configured CA, or not."""
    verify = deployment.verify_tls
    if isinstance(verify, bool):
        return verify  # True: aiohttp's default verifying context
    path = Path(verify).expanduser()
    if path.is_dir():
        return ssl.create_default_context(capath=str(path))
    return ssl.create_default_context(cafile=str(path))


# The operator's account identifiers an upstream may quote in its errors: OpenAI's organization
# (``org-…``), project (``proj_…``) and user (``user-…``) ids, API keys (``sk-…``, also in their
# masked form), AWS ARNs and account numbers ("account 123456789012", ``_NAMED_NUMBER``), and UUIDs
# named as an organization, workspace, project, account or (Azure) subscription (``_NAMED_UUID``).
# The tenant sees the message, never whose account it is. An id never ends in a '.' (a sentence's).
_ACCOUNT_IDS = re.compile(
    r"\b(?:(?P<prefix>org-|proj_|user-|sk-|sess-|acct_)[A-Za-z0-9](?:[A-Za-z0-9_\-*.]*[A-Za-z0-9_\-*])?"
    r"|(?P<arn>arn:aws[A-Za-z\-]*:)[^\s\"',]+)"
)


_NAMED_BY = re.compile(r"(?:organization|organisation|org|project|user|key)[\s:=]*$", re.IGNORECASE)


def _mask_account(match: re.Match[str]) -> str:
    prefix = match.group("prefix")
    if not prefix:
        return f"{match.group('arn')}***"
    rest = match.group(0)[len(prefix) :]
    # An id has a digit, a capital or a mask in it ("org-wide", "user-facing" are words), unless the
    # text names it as one ("in organization org-x").
    word = rest.islower() and rest.replace("-", "").replace("_", "").replace(".", "").isalpha()
    if word and not _NAMED_BY.search(match.string, max(0, match.start() - 20), match.start()):
        return match.group(0)
    return f"{prefix}***"


# Anthropic names the organization by a UUID: "the rate limit for your organization (a22cf6e6-…)".
_NAMED_UUID = re.compile(
    r"(?P<named>\b(?:organization|organisation|workspace|project|account|subscription)\b[\s:=(]*)"
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    re.IGNORECASE,
)


# An account number the text names as one: AWS's "account 123456789012", "account id: 1234567".
_NAMED_NUMBER = re.compile(r"(?P<named>\baccount(?:\s+(?:id|number|no\.?))?[\s:=#(]*)\d{6,}\b", re.IGNORECASE)


def redact_upstream_text(text: str) -> str:
    """``text`` without the operator's account identifiers or URL credentials (``redact_url``)."""
    text = _ACCOUNT_IDS.sub(_mask_account, text)
    if "-" in text:
        text = _NAMED_UUID.sub(r"\g<named>***", text)
    text = _NAMED_NUMBER.sub(r"\g<named>***", text)
    return redact_url(text)


def _error_message(status: int, raw: bytes) -> str:
    """The upstream's own error message, from whichever shape it answered in, account ids redacted."""
    return redact_upstream_text(_raw_error_message(status, raw))


def _raw_error_message(status: int, raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace").strip()
        return text[:500] or f"HTTP {status}"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        for key in ("detail", "message"):
            if data.get(key):
                return str(data[key])
    return f"HTTP {status}"


# OpenAI's 429 for one request larger than the organization's per-minute budget: "Request too large
# for gpt-4o in organization org-… on tokens per min (TPM): Limit 30000, Requested 120000. The input or
# output tokens must be reduced…" (type "tokens", code "rate_limit_exceeded"). Its overload 429 reads
# "Rate limit reached for … Limit 30000, Used 29000, Requested 2000. Please try again in 2s." — the
# request fits, the minute does not: that one is worth a retry, this one never is.
_TOO_LARGE = re.compile(r"request too large", re.IGNORECASE)
_LIMIT_REQUESTED = re.compile(r"\bLimit:?\s*([\d,]+)[^.]*?\bRequested:?\s*([\d,]+)", re.IGNORECASE)


def request_too_large(message: str) -> bool:
    """Whether an upstream 429's message says the request itself exceeds the limit (not the moment's load)."""
    if _TOO_LARGE.search(message):
        return True
    found = _LIMIT_REQUESTED.search(message)
    if found is None:
        return False
    limit, requested = (int(n.replace(",", "") or "0") for n in found.groups())
    return requested > limit > 0


def map_upstream_status(status: int, raw: bytes, headers: Any, label: str) -> GatewayError:
    """Turn an upstream HTTP error into the gateway error the client sees.

    The client's own mistakes (400/404/413/422) keep their status, and so does a 429 that says the
    request alone is over the limit ("Request too large", or "Limit N, Requested M" with M > N): 413
    ``request_too_large`` (``RequestTooLargeForUpstream``: no retry here, but a fallback with higher
    limits is tried; it counts neither way for the breaker). Everything
    else is the gateway's problem to report: 502 for upstream failures, 503 when it is overloaded, 504
    for its timeouts. The upstream status and message are kept in the body, the message without the
    operator's account identifiers (``redact_upstream_text``).
    """
    message = _error_message(status, raw)
    if status == 429 and request_too_large(message):
        return RequestTooLargeForUpstream(
            f"Upstream {label} refused the request as too large for its limits: {message}", status
        )
    if status in (400, 404, 413, 422):
        error = InvalidRequestError(
            f"Upstream {label} rejected the request: {message}",
            status=status,
            code="upstream_rejected",
            extra={"upstream_status": status},
        )
        return error
    if status in (429, 503):
        retry_after = headers.get("Retry-After", "1") if headers is not None else "1"
        return UpstreamError(
            f"Upstream {label} is overloaded (HTTP {status}): {message}",
            status=503,
            upstream_status=status,
            code="upstream_overloaded",
            headers={"Retry-After": retry_after if retry_after.isdigit() else "1"},
        )
    if status in (408, 504):
        return UpstreamError(
            f"Upstream {label} timed out (HTTP {status}): {message}",
            status=504,
            upstream_status=status,
            code="upstream_timeout",
        )
    if status in (401, 403):
        return UpstreamError(
            f"Upstream {label} refused the gateway's credentials (HTTP {status}): {message}",
            upstream_status=status,
            code="upstream_auth_failed",
        )
    return UpstreamError(f"Upstream {label} failed (HTTP {status}): {message}", upstream_status=status)


class UpstreamBackend(Backend):
    """Forwards requests to one OpenAI-compatible deployment."""

    def __init__(self, deployment: UpstreamDeployment, label: str, kind: str = "chat") -> None:
        self.deployment = deployment
        self.label = label
        self.kind = kind
        self._session: aiohttp.ClientSession | None = None
        timeouts = deployment.timeouts
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.first_byte
        )
        self._headers = {"Content-Type": "application/json", **deployment.headers}
        if deployment.api_key is not None:
            self._headers["Authorization"] = f"Bearer {deployment.api_key.get_secret_value()}"

    async def start(self) -> None:
        """Open the connection pool."""
        if self.deployment.verify_tls is False and self.deployment.base_url.startswith("https:"):
            log.warning("upstream %s: TLS certificate verification is OFF (verify_tls: false)", self.label)
        connector = aiohttp.TCPConnector(
            limit=self.deployment.max_connections, keepalive_timeout=30, ssl=tls_option(self.deployment)
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers, auto_decompress=True
        )

    async def close(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def is_ready(self) -> bool:
        """Ready once the pool is open (health checks come with routing)."""
        return self._session is not None

    def status(self) -> dict[str, object]:
        """Pool state for ``/readyz``."""
        return {
            "ready": self.is_ready(),
            "base_url": redact_url(self.deployment.base_url),
            "model": self.deployment.model,
        }

    def _payload(self, ctx: RequestContext, stream: bool) -> bytes:
        assert ctx.body is not None
        payload: dict[str, Any] = ctx.body.model_dump(exclude_unset=True, exclude_none=False)
        for field in _GATEWAY_ONLY_FIELDS:
            payload.pop(field, None)
        payload["model"] = self.deployment.model
        if stream:
            # Always ask for usage so the record has it; the server drops the chunk if the client
            # did not ask for it.
            payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}  # may be null
        try:
            return orjson.dumps(payload)
        except orjson.JSONEncodeError as error:
            # Validation rejects what orjson refuses (huge integers, deep nesting); should anything
            # slip through, it is still the client's data: a 400, never a failure of this deployment.
            raise InvalidRequestError(
                f"The request cannot be forwarded as JSON: {error}", code="invalid_value"
            ) from None

    async def _post(self, ctx: RequestContext, stream: bool) -> aiohttp.ClientResponse:
        if self._session is None:
            raise UpstreamError(f"Upstream {self.label} is not started", status=503)
        url = self.deployment.base_url + _PATHS[ctx.endpoint]
        payload = self._payload(ctx, stream)  # a client's unencodable body is its 400, outside the mapping
        with map_exceptions(self.label, CONNECTING):
            response = await self._session.post(url, data=payload)
        if response.status != 200:
            try:
                raw = await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError):
                raw = b""  # the status says enough
            finally:
                response.release()
            raise map_upstream_status(response.status, raw, response.headers, self.label)
        return response

    def _too_large(self, ctx: RequestContext, what: str, limit: str) -> AnswerTooLarge:
        size = getattr(self.deployment, limit)
        ctx.tags["answer_too_large"] = {"limit": limit, "bytes": size}  # the record's flag: output cut there
        return AnswerTooLarge(f"Upstream {self.label} {what} longer than its {limit} ({size} bytes)")

    async def _json(self, ctx: RequestContext) -> Chunk:
        response = await self._post(ctx, stream=False)
        raw: bytes | None = None
        try:
            with map_exceptions(self.label, READING):
                raw = await read_bounded(response, self.deployment.max_response_bytes)
        finally:
            if raw is None:
                response.close()  # over the limit or failed: drop the connection, the rest unread
            else:
                response.release()
        if raw is None:
            raise self._too_large(ctx, "sent an answer", "max_response_bytes")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"Upstream {self.label} returned invalid JSON", code="upstream_bad_response") from None
        if not isinstance(data, dict):
            raise UpstreamError(f"Upstream {self.label} returned a non-object", code="upstream_bad_response")
        if _too_deep(raw, data):
            raise UpstreamError(f"Upstream {self.label} answered JSON nested too deep", code="upstream_bad_response")
        return data

    async def generate(self, ctx: RequestContext) -> Chunk:
        """Forward a chat or completion request and return the upstream's answer."""
        data = await self._json(ctx)
        if not isinstance(data.get("choices"), list):
            raise UpstreamError(f"Upstream {self.label} answered without choices", code="upstream_bad_response")
        return data

    async def embed(self, ctx: RequestContext) -> Chunk:
        """Forward an embeddings request."""
        data = await self._json(ctx)
        if not isinstance(data.get("data"), list):
            raise UpstreamError(f"Upstream {self.label} answered without data", code="upstream_bad_response")
        return data

    async def open_stream(self, ctx: RequestContext) -> AsyncIterator[Chunk]:
        """Start the upstream stream (errors before the first byte raise here) and relay its events."""
        response = await self._post(ctx, stream=True)
        return self._relay(response, ctx)

    async def _relay(self, response: aiohttp.ClientResponse, ctx: RequestContext) -> AsyncIterator[Chunk]:
        done = False
        started = time.perf_counter()
        # aiohttp's own line limit (512 KiB) refused legitimate events: engines send a whole tool call's
        # arguments in one. Ours is explicit, and no event may be longer than a whole answer.
        deployment = self.deployment
        event_limit_name = (
            "max_event_bytes" if deployment.max_event_bytes <= deployment.max_response_bytes else "max_response_bytes"
        )
        event_limit = getattr(deployment, event_limit_name)
        budget = deployment.max_response_bytes  # bytes this stream may still send, framing included
        lines = read_lines(response.content, event_limit)
        try:
            with map_exceptions(self.label, STREAMING, started):
                async for raw_line in lines:
                    budget -= len(raw_line)
                    if budget < 0:
                        raise self._too_large(ctx, "sent a stream", "max_response_bytes")
                    line = raw_line.strip()
                    if not line.startswith(b"data:"):
                        continue  # comments, event names, keep-alives
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    try:
                        chunk = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise UpstreamError(
                            f"Upstream {self.label} sent a malformed stream event", code="upstream_bad_response"
                        ) from None
                    if _too_deep(data, chunk):
                        raise UpstreamError(
                            f"Upstream {self.label} sent a stream event nested too deep", code="upstream_bad_response"
                        )
                    if isinstance(chunk, dict) and "error" in chunk:
                        raise UpstreamError(
                            f"Upstream {self.label} failed mid-stream: {_error_message(500, data)}",
                            code="upstream_stream_error",
                        )
                    problem = chunk_problem(chunk)
                    if problem is not None:
                        raise UpstreamError(
                            f"Upstream {self.label} sent a stream event that {problem}", code="upstream_bad_response"
                        )
                    yield chunk
        except LineTooLong:
            raise self._too_large(ctx, "sent a stream event", event_limit_name) from None
        finally:
            await lines.aclose()
            if done:
                response.release()
            else:
                response.close()  # drop the connection: this also cancels the upstream's generation
        if not done:
            # A stream without its final event is a failure, never a silent success.
            raise UpstreamError(
                f"Upstream {self.label} ended the stream before it was complete",
                code="upstream_truncated_stream",
            )
