"""Reading request bodies (bounded in size and time) and writing responses over HTTP (JSON and SSE)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opsgate.domain.context import GatewayResponse, JsonResult, StreamResult
from opsgate.domain.errors import (
    IN_PROCESS_SCOPE_KEY,
    ClientDisconnected,
    ClientStalled,
    GatewayError,
    InvalidRequestError,
    ServerStopping,
)

log = logging.getLogger("opsgate.server")

_JSON_TYPES = ("application/json", "text/json")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# Body caps by route kind (inference routes use ``server.max_body_bytes``): admin JSON bodies are
# small objects; the login form holds one key.
ADMIN_MAX_BODY_BYTES = 64 * 1024
FORM_MAX_BODY_BYTES = 4 * 1024
INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
FORM_PATHS = frozenset({"/ui/login", "/ui/logout"})
# After a 408 or 413 the rest of the body is still on the wire: close rather than parse it as a request.
_CLOSE = {"Connection": "close"}
# Where the middleware leaves an inference body it refused before reading, for the route to record.
REFUSED_BODY_KEY = "opsgate.refused_body"
# Where the HTTP layer leaves its refusal of a body the route was reading (a bad chunk): the route sees a
# disconnect, and records the request as the 400 the client was sent, not as a client that went away.
BODY_REFUSAL_KEY = "opsgate.body_refusal"


@dataclass(frozen=True, slots=True)
class BodyRefusal:
    """The HTTP layer's 400 for an inference body it could not parse, with the id its answer carried."""

    request_id: str
    status: int
    reason: str  # a category (protocol_rejects.classify): invalid_chunk, ...
    message: str

    def error(self) -> GatewayError:
        return InvalidHttpError(f"Invalid HTTP request: {self.message}", status=self.status, code="invalid_http")


class InvalidHttpError(InvalidRequestError):
    """What the HTTP layer refused, as the route records it: ``error_type`` as in the HTTP layer's own records."""

    error_type = "invalid_http"


@dataclass(frozen=True)
class BodyLimits:
    """How large a request body may be (per route kind) and how long it may take to arrive."""

    inference_bytes: int
    timeout_seconds: float
    admin_bytes: int = ADMIN_MAX_BODY_BYTES
    form_bytes: int = FORM_MAX_BODY_BYTES

    def max_bytes(self, path: str) -> int:
        """The cap for a route: inference bodies, form posts, or everything else (the JSON admin API)."""
        if path in INFERENCE_PATHS:
            return self.inference_bytes
        if path in FORM_PATHS:
            return self.form_bytes
        return self.admin_bytes


class BodyLimitMiddleware:
    """Bounds every request body at the transport, whichever route reads it and however.

    The byte cap is checked against ``Content-Length`` before the app runs (a lie is caught while
    counting) and counted as chunks arrive (chunked uploads have no length). The whole body must
    arrive within ``timeout_seconds`` of the first read, so a client dripping bytes cannot hold a
    connection and its buffer open. Both answers close the connection.
    """

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limits.max_bytes(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        refused: GatewayError | None = None
        if declared is not None:
            # ASCII digits only: "²".isdigit() is true and int() refuses it; past 18 digits it is over any limit.
            if not (declared.isascii() and declared.isdigit()):
                refused = InvalidRequestError(
                    "Content-Length is not a number.", code="invalid_content_length", headers=_CLOSE
                )
            elif len(declared) > 18 or int(declared) > max_bytes:
                refused = _too_large(max_bytes)
        if refused is not None:
            if scope["path"] not in INFERENCE_PATHS:
                await error_response(refused)(scope, receive, send)
                return
            # Inference requests are recorded whatever happens: the route answers it through the pipeline
            # without reading the body.
            scope[REFUSED_BODY_KEY] = refused
        await self.app(scope, _BoundedReceive(receive, max_bytes, self.limits.timeout_seconds), send)


class _BoundedReceive:
    """An ASGI ``receive`` that raises 413 past ``max_bytes`` and 408 past the body deadline."""

    def __init__(self, receive: Receive, max_bytes: int, timeout: float) -> None:
        self.receive = receive
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.size = 0
        self.done = False
        self.deadline: float | None = None

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()  # after the body: disconnect listeners wait as long as they like
        loop = asyncio.get_running_loop()
        if self.deadline is None:
            self.deadline = loop.time() + self.timeout
        if _arrived(self.receive):
            # The message is in hand: receive() returns without suspending, so no timer could fire
            # (arming and cancelling one is ~6 us, on every request).
            return self._count(await self.receive())
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self.receive()
        except TimeoutError:
            self.done = True
            raise InvalidRequestError(
                f"The request body did not arrive within {self.timeout:g} seconds.",
                status=408,
                code="body_timeout",
                headers=_CLOSE,
            ) from None
        return self._count(message)

    def _count(self, message: Message) -> Message:
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.max_bytes:
                self.done = True
                raise _too_large(self.max_bytes)
            self.done = not message.get("more_body", False)
        else:
            self.done = True  # http.disconnect
        return message


def _arrived(receive: Receive) -> bool:
    """Whether uvicorn's ``receive`` holds its next message already (it then returns at once).

    Reads uvicorn's request cycle (``message_event``, set when body bytes or the disconnect have
    arrived; ``receive`` awaits it only when clear). Any other server, or a wrapped ``receive``: False.
    """
    event = getattr(getattr(receive, "__self__", None), "message_event", None)
    return isinstance(event, asyncio.Event) and event.is_set()


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, counted as it arrives: the one way routes read a body (413 past ``max_bytes``).

    ``BodyLimitMiddleware`` bounds size and arrival time for the whole app; this cap is the route's own.
    """
    parts: list[bytes] = []
    size = 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > max_bytes:
                raise _too_large(max_bytes)
            parts.append(part)
    except ClientDisconnect:
        refusal: BodyRefusal | None = request.scope.get(BODY_REFUSAL_KEY)
        if refusal is not None:
            raise refusal.error() from None
        raise ClientDisconnected() from None
    return b"".join(parts)


def require_media_type(request: Request, accepted: tuple[str, ...], *, required: bool = False) -> None:
    """415 unless the Content-Type is one of ``accepted`` (or a ``+json`` type when JSON is accepted).

    A missing Content-Type passes unless ``required`` (SDKs and curl often leave it out).
    """
    content_type = request.headers.get("content-type")
    if content_type is None:
        if not required:
            return
        media = ""
    else:
        media = content_type.split(";", 1)[0].strip().lower()
        if media in accepted or (media.endswith("+json") and "application/json" in accepted):
            return
    raise InvalidRequestError(
        f"Content-Type must be {accepted[0]}, not '{media or 'missing'}'.",
        status=415,
        code="unsupported_media_type",
    )


async def read_json_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, after checking its content type and size (415 and 413 in the OpenAI shape)."""
    require_media_type(request, _JSON_TYPES)
    return await read_body(request, max_bytes)


async def read_json_value(request: Request, max_bytes: int, empty: Any = None) -> Any:
    """The body parsed as JSON (checked as ``read_json_body`` does); ``empty`` for an empty body, if given."""
    raw = await read_json_body(request, max_bytes)
    if empty is not None and not raw.strip():
        return empty
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("The body is not valid JSON.", code="invalid_json") from None
    # PostgreSQL text cannot hold NUL (a 500 there, stored on SQLite): refused alike on both stores. orjson
    # itself refuses raw control characters and lone surrogates, so the escape is the only way one comes in.
    if b"\\u0000" in raw:
        where = _nul_at(value)
        if where is not None:
            raise InvalidRequestError(
                "Strings in the body may not contain NUL (\\u0000).", param=where or None, code="invalid_body"
            )
    return value


def _nul_at(value: Any) -> str | None:
    """The path (``items[0].prompt``) of the first string in ``value`` holding NUL, else None.

    A loop, not recursion: orjson reads JSON nested 1,024 deep, past Python's recursion limit.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return _path(where)
        elif isinstance(item, dict):
            for key in item:
                if "\x00" in key:
                    return _path(where)
            stack.extend((item[key], (*where, key)) for key in reversed(list(item)))
        elif isinstance(item, list):
            stack.extend((item[index], (*where, index)) for index in range(len(item) - 1, -1, -1))
    return None


def _path(parts: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")


def _too_large(max_bytes: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"The request body is larger than the limit of {max_bytes} bytes.",
        status=413,
        code="body_too_large",
        headers=_CLOSE,
    )


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    """An error in the OpenAI shape."""
    return Response(
        orjson.dumps(error.to_body()),
        status_code=error.status,
        headers={**error.headers, **(headers or {})},
        media_type="application/json",
    )


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def render(result: GatewayResponse) -> Response:
    """The HTTP response for a pipeline result."""
    if isinstance(result, JsonResult):
        return json_response(result.body, result.status, result.headers)
    return SseResponse(result)


# ``server.send_timeout_seconds`` where the app serving a stream has no gateway config (a bare test app).
DEFAULT_SEND_TIMEOUT = 30.0


class SseResponse(StreamingResponse):
    """A streamed answer as server-sent events, sent only as fast as the client takes it, and never longer.

    The pipeline's stream holds a deployment slot and an upstream connection until it ends, so the client
    cannot be allowed to hold them by not reading: a chunk that the client does not take within
    ``server.send_timeout_seconds`` (uvicorn waits on the socket's drain with no limit) abandons the
    stream as ``ClientStalled`` (499) and aborts the connection, whose unsent megabytes would otherwise
    wait on the client. A client found gone after a send (uvicorn drops writes to a closed connection
    silently) ends it as a disconnect, so a fast upstream is not read to its end for nobody. However the
    response ends — done, abandoned, cancelled by a disconnect or by the shutdown's drain, or before its
    first event — the stream is closed before it returns, so its record and its slot's release never wait
    on garbage collection.
    """

    def __init__(self, result: StreamResult) -> None:
        self.result = result
        self.events = _sse(result)
        self.send_timeout = DEFAULT_SEND_TIMEOUT
        self.transport: Any = None
        self.flow: Any = None
        self.in_process = False  # sent by the gateway itself: its cancellation is its caller's, never a shutdown
        self.streaming = False  # between the response start and the end of ``stream_response``
        self.started = False  # the response start went out: a shutdown's reason can only be an event now
        self.cut_by_server = False
        super().__init__(
            self.events,
            status_code=result.status,
            headers={**_SSE_HEADERS, **result.headers},
            media_type="text/event-stream",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.send_timeout = _send_timeout(scope)
        self.transport, self.flow = _connection(receive)
        self.in_process = bool(scope.get(IN_PROCESS_SCOPE_KEY))
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            if not self.cut_by_server:
                raise
            # The server stopped mid-stream: the client gets the reason as the stream's last event (the
            # OpenAI SDK raises on it), not a cut connection it would take for a network fault.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await self._end_stream()  # recorded first: the store closes with the server
            await self._send_stop(send)
        finally:
            await self._end_stream()

    async def _end_stream(self) -> None:
        """Close the stream however the response ended: its record, slot release and upstream close run now."""
        await self.events.aclose()  # a stream that reached its first chunk ends here (chunks() closes it)
        if not self.result.closed:
            # Never reached it: the client left before the response start, or the disconnect listener
            # cancelled the send first. Closing the events did nothing (a generator that never started
            # runs no code), so the stream's record, slot release and upstream close happen here.
            if self.result.outcome.error is None:
                self.result.outcome.error = ClientDisconnected()
            await self.result.close()

    async def stream_response(self, send: Send) -> None:
        """The headers, each event, then the end; stops early when the client is gone or stalled."""
        start: Message = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        self.streaming = True
        try:
            if not await self._send(send, start):
                return
            self.started = True
            async for event in self.events:
                if not await self._send(send, {"type": "http.response.body", "body": event, "more_body": True}):
                    return
            await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.streaming = False

    async def listen_for_disconnect(self, receive: Receive) -> None:
        """Starlette's listener, which also tells a shutdown from the stream's own end.

        Starlette cancels this listener once ``stream_response`` returns. Cancelled while the stream is
        still going, it is the server cutting the request (uvicorn cancels a request's task when its
        graceful-shutdown time runs out; a client leaving comes through ``receive``): the outcome is set
        here, before the stream's own cancellation closes it, so it is recorded as the server's 503
        ``server_stopping``, not as a client that left (499).
        """
        try:
            await super().listen_for_disconnect(receive)
        except asyncio.CancelledError:
            outcome = self.result.outcome
            if self.streaming and not self.in_process and not self.result.closed and outcome.error is None:
                outcome.error = ServerStopping()
                self.cut_by_server = True
            raise

    async def _send_stop(self, send: Send) -> None:
        """The ``server_stopping`` error event and the end of the body, if the client takes them at once; the
        503 itself when the stream was cut before its headers went out."""
        stopped = ServerStopping()
        try:
            async with asyncio.timeout(1.0):
                if not self.started:
                    await json_response(stopped.to_body(), stopped.status, stopped.headers)(
                        {"type": "http"}, _no_receive, send
                    )
                    return
                event = b"data: " + orjson.dumps(stopped.to_body()) + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (TimeoutError, OSError, RuntimeError):
            # The connection closes with the server either way (RuntimeError: the server saw a start we
            # did not know went out); the record already says why.
            pass

    async def _send(self, send: Send, message: Message) -> bool:
        """Send ``message`` within the send deadline; False (stop streaming) when the client stalled or left.

        Checked after the send, before the next chunk is pulled: a send that waited on a client who then
        closed must not pull from an upstream whose own deadline ran out meanwhile (a 504 blaming it).
        """
        if self.flow is not None and not self.flow.write_paused:
            # uvicorn waits in send only while its flow control is paused; otherwise the bytes go to the
            # transport at once, and arming a timer (~6 us, on every event) would buy nothing.
            await send(message)
        else:
            clock = asyncio.get_running_loop().time
            began = clock()
            try:
                async with asyncio.timeout(self.send_timeout):
                    await send(message)
                self.result.outcome.client_wait += clock() - began  # the upstream's deadline runs on meanwhile
            except TimeoutError:
                stalled = ClientStalled(self.send_timeout)
                log.warning("stream abandoned: %s", stalled.message)
                self.result.outcome.error = stalled  # recorded as the client's, when the stream closes
                if self.transport is not None:
                    self.transport.abort()  # drop the unsent bytes: close() would wait for the client to read them
                    await asyncio.sleep(0)  # uvicorn sees the connection lost before the app returns
                return False
        # The client left (uvicorn dropped the write): the stream ends unfinished, 499 client_disconnected.
        return self.transport is None or not self.transport.is_closing()


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _send_timeout(scope: Scope) -> float:
    """``server.send_timeout_seconds`` of the gateway serving ``scope`` (``app.state.gateway``), else the default."""
    gateway = getattr(getattr(scope.get("app"), "state", None), "gateway", None)
    server = getattr(getattr(gateway, "config", None), "server", None)
    seconds = getattr(server, "send_timeout_seconds", None)
    return float(seconds) if isinstance(seconds, int | float) else DEFAULT_SEND_TIMEOUT


def _connection(receive: Receive) -> tuple[Any, Any]:
    """The connection's transport and flow control under uvicorn (its request cycle's), else None for each.

    Found through ``receive``, which no middleware outside ``BodyLimitMiddleware`` wraps (as
    ``_arrived`` reads it); ``send`` is wrapped by several, none of which waits. Without a transport
    a stalled stream is left for the server to close; without the flow control (whose
    ``write_paused`` is the only thing uvicorn's ``send`` waits on) every send gets the deadline.
    """
    inner = receive.receive if isinstance(receive, _BoundedReceive) else receive
    cycle = getattr(inner, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if not (callable(getattr(transport, "abort", None)) and callable(getattr(transport, "is_closing", None))):
        transport = None
    flow = getattr(cycle, "flow", None)
    if not isinstance(getattr(flow, "write_paused", None), bool):
        flow = None
    return transport, flow


async def _sse(result: StreamResult) -> AsyncGenerator[bytes, None]:
    """Server-sent events: one ``data:`` line per chunk, an error event on failure, then ``[DONE]``."""
    # Closed with the events, so the stream's finish callbacks run when the response ends, not when collected.
    async with aclosing(result.chunks()) as chunks:
        try:
            async for chunk in chunks:
                if not result.include_usage:
                    if not chunk.get("choices") and chunk.get("usage"):
                        continue  # the usage chunk the client did not ask for
                    chunk.pop("usage", None)
                elif chunk.get("choices"):
                    chunk.setdefault("usage", None)
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        except GatewayError as error:
            # Headers are gone already; the error travels as an event the OpenAI SDK raises on.
            log.warning("stream failed: %s", error.message)
            yield b"data: " + orjson.dumps(error.to_body()) + b"\n\n"
            return
    yield b"data: [DONE]\n\n"
