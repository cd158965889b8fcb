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

The cost on a request that passes: three Python wrappers (``data_received`` per read, ``on_message_begin``
and ``on_headers_complete`` per request) with a few attribute reads, and one ``time.monotonic()``; no timer is
made or cancelled per request. One timer per connection is armed lazily: when it fires it re-arms for the
open head's deadline, or disarms when no head is open, and the next head re-arms it (at most one timer
call per connection per ``head_timeout``). Nothing is done on a body's reads beyond one attribute test.

``opsgate serve`` always runs uvicorn with httptools (``http_protocol`` below); h11 is not used, and it
caps a head anyway (``h11_max_incomplete_event_size``), though not in time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from time import monotonic
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("opsgate.server")

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_HEAD_TIMEOUT = 15.0

_431_BODY = b"Request Header Fields Too Large"
_408_BODY = b"Request Timeout"


def _plain_response(status: int, body: bytes) -> bytes:
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


_431 = _plain_response(431, _431_BODY)
_408 = _plain_response(408, _408_BODY)


async def _head_too_large_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers a head found too large once complete (uvicorn frames it: pipelining, HEAD, keep-alive)."""
    await send(
        {
            "type": "http.response.start",
            "status": 431,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(_431_BODY)),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _431_BODY})


# The base's methods called directly, not through super(): these run on every request.
_base_data_received = HttpToolsProtocol.data_received
_base_on_message_begin = HttpToolsProtocol.on_message_begin
_base_on_headers_complete = HttpToolsProtocol.on_headers_complete


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with every request head bounded in bytes and in time (module doc)."""

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
        if self._head_t0 is not None:
            # The read continues an open head: all of it is the head's, unless the head ends in it.
            self._head_bytes += len(data)
            _base_data_received(self, data)
            if self._head_t0 is not None and self._head_bytes > self._max_head_bytes:
                self._refuse_head()
            return
        # No head open: the read is a body's, or starts the next request. An upper bound for a head
        # starting here (read in on_headers_complete); exact if the previous message had fully arrived.
        cycle = self.cycle
        idle = cycle is None or not cycle.more_body
        self._head_bytes = len(data)
        _base_data_received(self, data)
        if self._head_t0 is not None:  # a head started in this read and is still open
            if not idle:
                self._head_bytes = 0  # it started after body bytes of unknown length: count from the next read
            elif self._head_bytes > self._max_head_bytes:
                self._refuse_head()

    # Parser callbacks

    def on_message_begin(self) -> None:
        if self._head_t0 is None:
            self._head_t0 = monotonic()
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._head_timeout, self._head_clock)
        _base_on_message_begin(self)

    def on_headers_complete(self) -> None:
        too_large = self._head_bytes > self._max_head_bytes and self._head_size() > self._max_head_bytes
        self._head_t0 = None
        self._head_bytes = 0
        if not too_large:
            _base_on_headers_complete(self)
            return
        log.info("request head over %d bytes refused (431)", self._max_head_bytes)
        app = self.app
        self.app = _head_too_large_app  # uvicorn starts it as the request's app; it answers and closes
        try:
            _base_on_headers_complete(self)
        finally:
            self.app = app

    # Limits

    def _head_size(self) -> int:
        """The complete head's size from its parsed parts (request line, fields, line ends)."""
        size = len(self.url) + 16  # method, spaces, HTTP/1.1, CRLF
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        return size

    def _answer_and_close(self, response: bytes) -> None:
        """``response`` when no other response is on the wire (else none), then close."""
        if self.transport.is_closing():
            return  # already answered (a parse error's 400) or closed
        cycle = self.cycle
        if (cycle is None or cycle.response_complete) and not self.pipeline:
            self.transport.write(response)
        self.transport.close()

    def _refuse_head(self) -> None:
        self._head_t0 = None
        if not self.transport.is_closing():  # else already answered (a parse error's 400) or closed
            log.info("request head over %d bytes refused (431)", self._max_head_bytes)
            self._answer_and_close(_431)

    def _head_clock(self) -> None:
        """The connection's head timer: closes a head past its deadline, else re-arms for it or disarms."""
        self._head_timer = None
        t0 = self._head_t0
        if t0 is None or self.transport.is_closing():
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
            self.transport.close()  # a connection that sent nothing gets no answer
            return
        log.info("request head not complete within %.1f s: closed (408)", self._head_timeout)
        self._answer_and_close(_408)


def http_protocol(max_head_bytes: int, head_timeout: float) -> Any:
    """uvicorn's ``Config(http=...)`` for these limits; a partial of a module-level class, so it pickles
    into ``--workers`` processes."""
    if not (max_head_bytes >= 1 and math.isfinite(head_timeout) and head_timeout > 0):
        raise ValueError("max_head_bytes and head_timeout must be positive")
    return functools.partial(HeadLimitedHttpToolsProtocol, max_head_bytes=max_head_bytes, head_timeout=head_timeout)
