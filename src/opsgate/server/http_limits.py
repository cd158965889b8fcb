"""Request heads (request line and header fields) bounded in bytes and in time, before the app runs.

httptools (llhttp) has no cap on a head: it buffers a header line for as long as it grows, and uvicorn
keeps no clock on a head (its keep-alive timer stops at the first byte of a request; the app's
``server.body_timeout_seconds`` starts after the headers). So one connection could grow the process by
the size of the header it sends, and connections dripping a header byte now and then were held for ever,
before any authentication. ``HeadLimitedHttpToolsProtocol`` is uvicorn's httptools protocol with the two
limits production proxies put there (nginx's ``large_client_header_buffers`` and
``client_header_timeout``):

- bytes: more than ``max_head_bytes`` received while a head is open closes the connection after a
  ``431 Request Header Fields Too Large`` (checked after every read of a head still open, so a head is
  never buffered past the limit plus one socket read); a head that completes within one read is measured
  from its parsed parts, only when that read could have taken it past the limit;
- time: a head must be complete within ``head_timeout`` seconds of its first byte (for a connection's
  first request, of the connection's start, so a connection that never sends a byte is closed too), else
  ``408 Request Timeout`` (no answer to a connection that sent nothing) and the connection is closed.
  Time spent while the server itself stopped reading (a pipelined request waiting for the one before
  it) does not count.

The cost on a request that passes: two Python wrappers (``on_message_begin`` and ``on_headers_complete`` per
request) and ``data_received`` per read with a few attribute reads, and one ``time.monotonic()``; no timer is
made or cancelled per request. One timer per connection is armed lazily: when it fires it re-arms for the
open head's deadline, or disarms when no head is open, and the next head re-arms it (at most one timer
call per connection per ``head_timeout``). Nothing is done on a body's reads beyond one attribute test.

Every request this protocol refuses — the parser's 400s (``Content-Length`` with ``Transfer-Encoding``, a
malformed request line, bad header bytes, a bad chunk), the 431s and the 408s — is handed to the gateway's
``RejectLog`` (``server/protocol_rejects.py``): counted in ``/metrics``, recorded (rate-limited per client
address, the rest aggregated). The parser's 400 is in the OpenAI error shape (uvicorn's was plain text),
after any response still due on the connection. uvicorn's ``data_received`` is inlined here for that: it
logged a warning per malformed request (a flood of them was a flood of log lines) and left no way to the
parser's reason; inlined, it is also two Python calls fewer per read.

``opsgate serve`` always runs uvicorn with httptools (``http_protocol`` below); h11 is not used, and it
caps a head anyway (``h11_max_incomplete_event_size``), though not in time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Iterable
from time import monotonic
from typing import Any, cast

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from opsgate.server.http_io import BODY_REFUSAL_KEY, INFERENCE_PATHS, BodyRefusal
from opsgate.server.protocol_rejects import ProtocolReject, RejectLog, classify, reject_log_of

log = logging.getLogger("opsgate.server")

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_HEAD_TIMEOUT = 15.0


def _error_body(message: str, code: str, status: int = 400) -> bytes:
    """A refusal in the OpenAI error shape, as every other one (a client's SDK parses it)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


_431_BODY = _error_body("Request header fields too large.", "request_header_fields_too_large")
_408_BODY = _error_body("The request head was not received in time.", "request_timeout")


def _refusal(
    status: int, body: bytes, request_id: str | None, default_headers: list[tuple[bytes, bytes]] | None = None
) -> bytes:
    """A JSON answer framed by hand, then the connection closes (the parser cannot go on)."""
    return b"".join(
        [
            STATUS_LINE[status],
            *(b"%s: %s\r\n" % (name, value) for name, value in default_headers or ()),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: %s\r\n" % request_id.encode() if request_id else b"",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def _head_too_large_app(request_id: str | None) -> Any:
    """An ASGI app answering a head found too large once complete (uvicorn frames it: pipelining, HEAD,
    keep-alive)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(_431_BODY)),
        (b"connection", b"close"),
    ]
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 431, "headers": headers})
        await send({"type": "http.response.body", "body": _431_BODY})

    return app


# The base's methods called directly, not through super(): these run on every request.
_base_on_message_begin = HttpToolsProtocol.on_message_begin
_base_on_headers_complete = HttpToolsProtocol.on_headers_complete


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with every request head bounded in bytes and in time, and every
    refusal (the parser's, the limits') counted and recorded (module doc)."""

    def __init__(
        self,
        *args: Any,
        max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._max_head_bytes = max_head_bytes
        self._head_timeout = head_timeout
        self._head_t0: float | None = None  # when the open head started; None while no head is open
        self._head_bytes = 0  # bytes read while this head was open (see data_received)
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False  # a refusal is answered (or due): the parser is done with this connection
        self.url = b""  # uvicorn sets it when a message begins; a refusal may come before any

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The first request's head is timed from the connection's start (as nginx does): a connection
        # that never sends a byte holds a descriptor too.
        self._head_t0 = monotonic()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_clock)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, inlined (module doc), with the head's byte count around the parser.
        if self._refused:
            return  # the answer is given or due: what else the client sends is not parsed (nor buffered)
        if self.timeout_keep_alive_task is not None:
            self._unset_keepalive_if_required()
        try:
            if self._head_t0 is not None:
                # The read continues an open head: all of it is the head's, unless the head ends in it.
                self._head_bytes += len(data)
                self.parser.feed_data(data)
                if self._head_t0 is not None and self._head_bytes > self._max_head_bytes:
                    self._refuse_head()
                return
            # No head open: the read is a body's, or starts the next request. An upper bound for a head
            # starting here (read in on_headers_complete); exact if the previous message had fully arrived.
            cycle = self.cycle
            idle = cycle is None or not cycle.more_body
            self._head_bytes = len(data)
            self.parser.feed_data(data)
            if self._head_t0 is not None:  # a head started in this read and is still open
                if not idle:
                    self._head_bytes = 0  # it started after body bytes of unknown length: count from the next read
                elif self._head_bytes > self._max_head_bytes:
                    self._refuse_head()
        except httptools.HttpParserError as error:
            self._refuse_malformed(error)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's plain 400, should any of its code still call it: a refusal like the parser's."""
        self._refuse_malformed(httptools.HttpParserError(msg))

    # Parser callbacks

    def on_message_begin(self) -> None:
        if self._head_t0 is None:
            self._head_t0 = monotonic()
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._head_timeout, self._head_clock)
        _base_on_message_begin(self)

    def on_headers_complete(self) -> None:
        if self._head_bytes > self._max_head_bytes and self._head_size() > self._max_head_bytes:
            self._head_too_large()
            return
        _base_on_headers_complete(self)
        # Closed after the base: should it raise (a URL it cannot take apart), the head is still the open one.
        self._head_t0 = None
        self._head_bytes = 0

    # Limits

    def _head_too_large(self) -> None:
        """A complete head found over the limit: answered 431 through uvicorn, which frames it in order."""
        t0, self._head_t0 = self._head_t0, None
        self._head_bytes = 0
        request_id = self._report(431, "head_too_large", f"request head over {self._max_head_bytes} bytes", t0)
        app = self.app
        self.app = _head_too_large_app(request_id)  # uvicorn starts it as the request's app; it answers and closes
        try:
            _base_on_headers_complete(self)
        finally:
            self.app = app

    def _head_size(self) -> int:
        """The complete head's size from its parsed parts (request line, fields, line ends)."""
        size = len(self.url) + 16  # method, spaces, HTTP/1.1, CRLF
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        return size

    def _refuse_head(self) -> None:
        t0, self._head_t0 = self._head_t0, None
        if self._refused or self.transport.is_closing():  # already answered or closed
            return
        request_id = self._report(431, "head_too_large", f"request head over {self._max_head_bytes} bytes", t0)
        self._answer_and_close(_refusal(431, _431_BODY, request_id))

    def _head_clock(self) -> None:
        """The connection's head timer: closes a head past its deadline, else re-arms for it or disarms."""
        self._head_timer = None
        t0 = self._head_t0
        if t0 is None or self._refused or self.transport.is_closing():
            return  # no head open: the next one re-arms
        now = monotonic()
        if self.flow.read_paused:
            # We stopped reading (a pipelined request waits for the one before it): not the client's time.
            self._head_t0 = now
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_clock)
            return
        left = t0 + self._head_timeout - now
        if left > 0:
            self._head_timer = self.loop.call_later(left, self._head_clock)
            return
        self._head_t0 = None
        if self.cycle is None and self._head_bytes == 0:
            self.transport.close()  # a connection that sent nothing gets no answer (and is no request)
            return
        reason = f"request head not complete within {self._head_timeout:g} s"
        request_id = self._report(408, "head_timeout", reason, t0)
        self._answer_and_close(_refusal(408, _408_BODY, request_id))

    # Refusals

    def _refuse_malformed(self, error: httptools.HttpParserError) -> None:
        """The parser refused what the client sent: answer 400 (OpenAI shape) and close, recorded."""
        if self._refused or self.transport.is_closing():
            return  # the parser is fed again after its error (reads resumed while an answer was due)
        t0, self._head_t0 = self._head_t0, None
        status, reason, message = classify(error)
        if status >= 500:
            log.error("HTTP parser callback failed", exc_info=error)
        request_id = self._report(status, reason, message, t0)
        if status >= 500:
            answer = "Internal error reading the request."
        elif isinstance(error, httptools.HttpParserCallbackError):
            answer = "Invalid HTTP request: the request target cannot be parsed."  # the record has the details
        else:
            answer = f"Invalid HTTP request: {message}"  # llhttp's reason: a fixed string
        self._answer_and_close(
            _refusal(status, _error_body(answer, "invalid_http", status), request_id, self.server_state.default_headers)
        )

    def _report(self, status: int, reason: str, message: str, t0: float | None) -> str | None:
        """Count and record one refusal (with what the parser read of its head); its record id, if recorded."""
        rejects: RejectLog | None = reject_log_of(self.app)
        if rejects is None:
            log.debug("HTTP request refused (%d %s): %s", status, reason, message)
            return None
        cycle = self.cycle
        dispatched = cycle is not None and cycle.more_body and not cycle.response_complete
        method: bytes | str | None = None
        path: bytes | None = None
        headers: Iterable[tuple[bytes, bytes]] = ()
        if dispatched:  # the refusal is in this request's body: its head is the cycle's (the app has it too)
            method, path, headers = cycle.scope.get("method"), cycle.scope.get("raw_path"), cycle.scope["headers"]
        elif t0 is not None and self.url:
            path, headers = self.url, self.headers or ()  # the head the parser had read so far
            try:
                method = self.parser.get_method()
            except Exception:
                method = None
        request_id = next((value for name, value in headers if name == b"x-request-id"), None)
        if dispatched and cycle.scope.get("path") in INFERENCE_PATHS:
            # The inference route is reading this body: it records the request (its tenant, key and
            # model included) as this refusal when its read ends, under the id the client gets now.
            refusal = BodyRefusal(rejects.new_id(), status, reason, message)
            cast(dict[str, Any], cycle.scope)[BODY_REFUSAL_KEY] = refusal  # ASGI scopes take extra keys
            return refusal.request_id
        return rejects.add(
            ProtocolReject(
                status=status,
                reason=reason,
                message=message,
                client=self.client,
                method=method,
                path=path,
                dispatched=dispatched,
                client_request_id=request_id.decode("latin-1") if request_id else None,
                latency_ms=None if t0 is None else (monotonic() - t0) * 1000.0,
            )
        )

    def _answer_and_close(self, response: bytes) -> None:
        """``response`` and close, after the responses still due on this connection (pipelined requests
        that came before the refused one); only closed if the refused request's own answer has begun."""
        self._refused = True
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.write(response)
            self.transport.close()
            return
        if cycle.more_body:  # the refused request is this one, its body still arriving; the app sees a disconnect
            if not cycle.response_started:
                self.transport.write(response)
            self.transport.close()
            return
        # An earlier request is still being answered (or waits in the pipeline; ``cycle`` is the last of
        # them): answer after it.
        self.flow.pause_reading()
        after = cycle.on_response

        def answer_after() -> None:
            after()
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

        cycle.on_response = answer_after


def http_protocol(max_head_bytes: int, head_timeout: float) -> Any:
    """uvicorn's ``Config(http=...)`` for these limits; a partial of a module-level class, so it pickles
    into ``--workers`` processes."""
    if not (max_head_bytes >= 1 and math.isfinite(head_timeout) and head_timeout > 0):
        raise ValueError("max_head_bytes and head_timeout must be positive")
    return functools.partial(HeadLimitedHttpToolsProtocol, max_head_bytes=max_head_bytes, head_timeout=head_timeout)
