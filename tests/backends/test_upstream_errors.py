"""One translation of aiohttp's errors (backends/upstream.py ``map_exceptions``), over real sockets.

Every way an upstream connection fails is an ``UpstreamError`` (502, the router may fall back and the
breaker counts it) or an ``UpstreamTimeoutError`` (504) — never an exception that escapes as a 500.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import aiohttp
import pytest

from opsgate.backends.upstream import CONNECTING, READING, STREAMING, UpstreamBackend, map_exceptions
from opsgate.domain.config import Timeouts, UpstreamDeployment
from opsgate.domain.context import RequestContext
from opsgate.domain.errors import UpstreamError, UpstreamTimeoutError
from opsgate.domain.requests import ChatCompletionRequest
from tests.support import free_port


def context(stream: bool = False) -> RequestContext:
    raw = b'{"model": "up", "messages": [{"role": "user", "content": "hi"}], "stream": %s}' % (
        b"true" if stream else b"false"
    )
    ctx = RequestContext(endpoint="chat", raw_body=raw, headers={})
    ctx.body = ChatCompletionRequest.model_validate_json(raw)
    return ctx


@pytest.mark.parametrize(
    ("raised", "expected", "code"),
    [
        (TimeoutError(), UpstreamTimeoutError, "upstream_timeout"),
        (aiohttp.ServerDisconnectedError(), UpstreamError, "upstream_error"),
        (aiohttp.ClientPayloadError("cut"), UpstreamError, "upstream_error"),
        # A bare socket error escaped as a 500 before.
        (ConnectionResetError(104, "Connection reset by peer"), UpstreamError, "upstream_error"),
        (BrokenPipeError(), UpstreamError, "upstream_error"),
    ],
)
def test_every_client_and_socket_error_maps_to_an_upstream_error(
    raised: BaseException, expected: type[UpstreamError], code: str
) -> None:
    for phase in (CONNECTING, READING, STREAMING):
        with pytest.raises(expected) as caught, map_exceptions("up#0", phase, started=0.0):
            raise raised
        assert caught.value.code == code and caught.value.fallback_allowed
        assert "up#0" in caught.value.message


def test_gateway_errors_and_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), map_exceptions("up#0", CONNECTING):
        raise KeyError("a bug stays a bug")
    with pytest.raises(UpstreamError, match="malformed"), map_exceptions("up#0", STREAMING):
        raise UpstreamError("malformed", code="upstream_bad_response")


async def _serve(handler: Any) -> tuple[asyncio.Server, int]:
    port = free_port()
    server = await asyncio.start_server(handler, "127.0.0.1", port)
    return server, port


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
    writer.transport.abort()


async def _backend(port: int, **timeouts: float) -> UpstreamBackend:
    deployment = UpstreamDeployment(
        type="openai", base_url=f"http://127.0.0.1:{port}/v1", model="m", timeouts=Timeouts(**timeouts)
    )
    backend = UpstreamBackend(deployment, "up#0")
    await backend.start()
    return backend


async def test_a_refused_connection_is_unreachable() -> None:
    backend = await _backend(free_port())
    try:
        with pytest.raises(UpstreamError) as caught:
            await backend.generate(context())
        assert caught.value.code == "upstream_unreachable" and caught.value.status == 502
    finally:
        await backend.close()


async def test_a_reset_mid_body_is_a_502() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"cho')
        await writer.drain()
        _reset(writer)

    server, port = await _serve(handler)
    backend = await _backend(port)
    try:
        with pytest.raises(UpstreamError) as caught:
            await backend.generate(context())
        assert type(caught.value) is UpstreamError and "broke off the response" in caught.value.message
    finally:
        await backend.close()
        server.close()


async def test_a_stalled_stream_is_a_504_saying_how_long_it_waited() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        event = b'data: {"choices": []}\n\n'
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(30)  # then nothing

    server, port = await _serve(handler)
    backend = await _backend(port, first_byte=0.5)
    try:
        stream = await backend.open_stream(context(stream=True))
        with pytest.raises(UpstreamTimeoutError, match=r"stream stalled after \d+\.\ds"):
            async for _ in stream:
                pass
    finally:
        await backend.close()
        server.close()
