"""Streams whose client stops reading, leaves early (even before the first event), or is still held when
the server shuts down.

A stream holds its deployment's slot and an upstream connection until it ends, so the client must not
be able to hold them by not reading (``server.send_timeout_seconds``), a client that left must not have
the upstream read to its end for nobody, and a shutdown must record what it cut off.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from starlette.types import Message

from opsgate.domain.config import ConfigError, parse_config
from opsgate.domain.context import Chunk, StreamOutcome, StreamResult
from opsgate.pipeline.record import MemorySink
from opsgate.server.app import create_app
from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, isolated, serve_process, start_gateway, wait_until

SEND_TIMEOUT = 1.5


class LargeStream(FakeUpstream):
    """Streams ``chunks`` events of ``size`` characters each, as fast as they are read (20 MB by default)."""

    chunks = 200
    size = 100_000
    streams_open = 0

    async def _stream(self, request: web.Request, body: dict[str, Any], chat: bool) -> web.StreamResponse:
        self.streams_open += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "up", "object": "chat.completion.chunk", "created": int(time.time()), "model": body["model"]}
        piece = {**base, "choices": [{"index": 0, "delta": {"content": "x" * self.size}, "finish_reason": None}]}
        event = b"data: " + json.dumps(piece).encode() + b"\n\n"
        try:
            for _ in range(self.chunks):
                await response.write(event)
            last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            usage = {**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}
            for item in (last, usage):
                await response.write(b"data: " + json.dumps(item).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
        except ConnectionError:
            pass  # the gateway closed the upstream call
        finally:
            self.streams_open -= 1
        return response


def _config(upstream: FakeUpstream, **server: Any) -> dict[str, Any]:
    deployment = {
        "type": "openai",
        "base_url": upstream.base_url,
        "model": "real-model",
        "timeouts": {"first_byte": 10, "total": 300},  # no upstream deadline ends these streams
        "limits": {"max_in_flight": 1, "max_queue": 1, "queue_timeout": 2},
    }
    return {"server": server, "models": [{"name": "m", "routing": {"retries": 0}, "deployments": [deployment]}]}


def _open_stream(port: int, request_id: str, rcvbuf: int | None = 4096) -> socket.socket:
    """A raw client that asks for a stream (and reads nothing unless the test does)."""
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "long"}]}).encode()
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closed (or reset) the connection: reading it to the end finishes within ``within``."""
    sock.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not sock.recv(1 << 20):
                return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return False


@pytest.fixture
def upstream() -> Iterator[LargeStream]:
    server = LargeStream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gateway(upstream: LargeStream) -> Iterator[Gateway]:
    gw = start_gateway(_config(upstream, send_timeout_seconds=SEND_TIMEOUT))
    yield gw
    gw.server.stop()


def test_a_client_that_stops_reading_is_abandoned_at_the_send_deadline(gateway: Gateway, upstream: LargeStream) -> None:
    sock = _open_stream(gateway.server.port, "stalled-1")
    try:
        started = time.monotonic()
        # Recorded once the client has not read for SEND_TIMEOUT (before: only when the client closed).
        records = gateway.records_for("stalled-1", timeout=15)
        held = time.monotonic() - started
        assert len(records) == 1, records
        record = records[0]
        assert record["status"] == 499 and record["error_type"] == "client_stalled", record
        assert "send_timeout_seconds" in record["error_message"]
        assert held < 12
        # The slot is free (max_in_flight 1): another client is served, not answered 503 overloaded.
        other = httpx.post(
            gateway.base_url + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert other.status_code == 200, other.text
        # The upstream call was closed, and so was the client's connection (its unsent bytes dropped).
        assert wait_until(lambda: upstream.streams_open == 0, 10)
        assert _closed_by_server(sock, 10)
    finally:
        sock.close()


def test_a_client_that_stops_reading_then_closes_is_recorded_as_gone_not_as_an_upstream_timeout(
    upstream: LargeStream,
) -> None:
    # Events larger than what the gateway's upstream reader buffers: the next one must come off the network.
    upstream.chunks, upstream.size = 20, 1_000_000
    config = _config(upstream, send_timeout_seconds=30)
    # Runs out while the send waits on the client; long enough that the first 1 MB event is in hand before
    # it does, even on a loaded machine (with 1 s it sometimes was not: a 504 before the stream began).
    config["models"][0]["deployments"][0]["timeouts"]["total"] = 3
    gateway = start_gateway(config)
    try:
        sock = _open_stream(gateway.server.port, "closer-1")
        assert wait_until(lambda: upstream.streams_open == 1, 10)
        time.sleep(4.5)  # past the upstream deadline: the gateway's send has been waiting on the client since
        sock.close()
        [record] = gateway.records_for("closer-1", timeout=10)
        assert (record["status"], record["error_type"]) == (499, "client_disconnected"), record
    finally:
        gateway.server.stop()


def test_a_client_that_reads_too_slowly_for_the_upstream_deadline_is_recorded_as_slow_not_as_a_504(
    upstream: LargeStream,
) -> None:
    # The client reads a little at a time, each event inside the send deadline, so the stream runs past the
    # deployment's timeouts.total while the gateway waits on it: that was a 504 blaming the upstream (and
    # spending the availability SLO's budget); now a 499 client_slow.
    upstream.chunks, upstream.size = 400, 20_000
    config = _config(upstream, send_timeout_seconds=30)
    config["models"][0]["deployments"][0]["timeouts"]["total"] = 3
    gateway = start_gateway(config)
    try:
        sock = _open_stream(gateway.server.port, "slow-1")
        try:
            sock.settimeout(1.0)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not gateway.records_for("slow-1", timeout=0):
                try:
                    if not sock.recv(4096):
                        break
                except TimeoutError:
                    pass
                time.sleep(0.05)  # about 80 KB/s: a 20 KB event drains in a quarter of a second
            [record] = gateway.records_for("slow-1", timeout=10)
        finally:
            sock.close()
        assert (record["status"], record["error_type"]) == (499, "client_slow"), record
        assert "waited" in record["error_message"]
    finally:
        gateway.server.stop()


def test_a_reading_client_gets_the_whole_stream(gateway: Gateway) -> None:
    with httpx.stream(
        "POST",
        gateway.base_url + "/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "long"}]},
        headers={"X-Request-Id": "reader-1"},
        timeout=60,
    ) as response:
        size = sum(len(part) for part in response.iter_bytes())
    assert response.status_code == 200 and size > 20_000_000
    [record] = gateway.records_for("reader-1", timeout=10)
    assert record["status"] == 200 and len(record["output_text"]) == 200 * 100_000


def test_a_client_that_leaves_early_is_recorded_as_gone_and_the_upstream_is_not_read_on(
    tmp_path: Path, upstream: LargeStream
) -> None:
    upstream.chunks, upstream.size = 400, 20_000  # 8 MB, sent as fast as it is read
    config = _config(upstream)
    config["record"] = {"store": f"sqlite:///{tmp_path}/requests.db", "journal_dir": f"{tmp_path}/journal"}
    (tmp_path / "gw.yaml").write_text(json.dumps(config))
    with serve_process(tmp_path / "gw.yaml", log=tmp_path / "log.txt") as (_, url):
        port = int(url.rsplit(":", 1)[1])
        for i in range(6):
            sock = _open_stream(port, f"leaver-{i}", rcvbuf=None)
            sock.recv(2000)
            sock.close()
            assert wait_until(lambda: upstream.streams_open == 0, 10)

        def rows() -> list[tuple[Any, ...]]:
            with sqlite3.connect(tmp_path / "requests.db") as db:
                query = "select status, error_type, length(output_text) from requests where endpoint = 'chat'"
                return list(db.execute(query))

        assert wait_until(lambda: len(rows()) == 6, 20), rows()
    for status, error_type, length in rows():
        assert (status, error_type) == (499, "client_disconnected"), rows()
        assert length < 8_000_000


def test_shutdown_records_streams_whose_clients_stopped_reading(tmp_path: Path, upstream: LargeStream) -> None:
    config = _config(upstream)  # the default send deadline (30 s) outlasts the drain
    config["record"] = {"store": f"sqlite:///{tmp_path}/requests.db", "journal_dir": f"{tmp_path}/journal"}
    config["models"][0]["deployments"][0]["limits"]["max_in_flight"] = 4
    (tmp_path / "gw.yaml").write_text(json.dumps(config))
    socks = []
    try:
        with serve_process(tmp_path / "gw.yaml", log=tmp_path / "log.txt", args=["--drain-timeout", "2"]) as (_, url):
            port = int(url.rsplit(":", 1)[1])
            socks = [_open_stream(port, f"stuck-{i}") for i in range(2)]
            assert wait_until(lambda: upstream.streams_open == 2, 15)
            time.sleep(1)  # both are now waiting on their clients
        # serve_process sent SIGTERM and waited for the exit: the cut-off streams are in the store.
        with sqlite3.connect(tmp_path / "requests.db") as db:
            rows = list(db.execute("select id, status from requests where endpoint = 'chat' order by id"))
    finally:
        for sock in socks:
            sock.close()
    # Recorded, and as the server's cut (the send deadline had not run out on them): 503 server_stopping.
    assert [status for _, status in rows] == [503, 503], rows


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan"), 7200])
def test_the_send_deadline_is_a_finite_positive_time(seconds: float) -> None:
    with pytest.raises(ConfigError, match="send_timeout_seconds"):
        parse_config({"server": {"send_timeout_seconds": seconds}, "models": []})
    assert parse_config({"models": []}).server.send_timeout_seconds == 30


class _Cycle:
    """What ``SseResponse`` reads of uvicorn's request cycle through ``receive``: the connection's transport.

    ``receive`` gives the body, then blocks the gateway's disconnect watcher (the pipeline's work finishes),
    then reports the disconnect at once when ``gone`` (the disconnect listener of ASGI 2.3).
    """

    def __init__(self, body: bytes, closing: bool, gone: bool) -> None:
        self.transport = self
        self.closing = closing
        self.gone = gone
        self.body = body
        self.calls = 0
        self.sent: list[Message] = []

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    async def receive(self) -> Message:
        self.calls += 1
        if self.calls == 1:
            return {"type": "http.request", "body": self.body, "more_body": False}
        if self.calls == 2 or not self.gone:
            await asyncio.sleep(3600)  # the watcher in Gateway.handle: cancelled once the work is done
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)


def _scope(spec: str, request_id: str) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


@pytest.mark.parametrize(
    ("spec", "closing", "gone"),
    [
        ("2.4", True, False),  # the connection is closing when the response start is sent
        # Under Starlette's disconnect listener (uvicorn's ASGI 2.3), which returns at once and cancels the sender.
        ("2.3", True, True),
    ],
)
async def test_a_client_gone_before_the_first_event_frees_the_slot_and_is_recorded(
    upstream: LargeStream, spec: str, closing: bool, gone: bool
) -> None:
    sink = MemorySink(100)
    config = isolated(parse_config(_config(upstream)))  # max_in_flight 1
    app = create_app(config, sink=sink)
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "long"}]}).encode()
    async with app.router.lifespan_context(app):
        cycle = _Cycle(body, closing=closing, gone=gone)
        await asyncio.wait_for(app(_scope(spec, "early-1"), cycle.receive, cycle.send), 30)
        assert not any(m["type"] == "http.response.body" for m in cycle.sent), cycle.sent
        # Recorded as the client's leaving (on the previous tree: never recorded).
        records = [r for r in sink.records if r.get("client_request_id") == "early-1" or r["id"] == "early-1"]
        assert [(r["status"], r["error_type"]) for r in records] == [(499, "client_disconnected")], records
        # The upstream call under the never-started stream is closed, not left to garbage collection.
        assert await asyncio.to_thread(wait_until, lambda: upstream.streams_open == 0, 10)
        # The slot is free (max_in_flight 1): the next request is served, not 503 after the queue timeout.
        plain = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        other = _Cycle(plain, closing=False, gone=False)
        await asyncio.wait_for(app(_scope("2.4", "early-2"), other.receive, other.send), 30)
        assert other.sent[0]["status"] == 200, other.sent


async def test_closing_a_stream_that_never_started_closes_the_upstream_under_its_wrappers() -> None:
    closed: list[str] = []
    finished: list[StreamOutcome] = []

    async def upstream_call() -> AsyncIterator[Chunk]:
        try:
            yield {"choices": [{"index": 0, "delta": {"content": "a"}}]}
            yield {"choices": [{"index": 0, "delta": {"content": "b"}}]}
        finally:
            closed.append("upstream")

    async def wrapper(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        try:  # as the router's first-chunk wrapper: its finally closes ``rest``, but only once it started
            yield first
            async for chunk in rest:
                yield chunk
        finally:
            closed.append("wrapper")

    inner = upstream_call()
    first = await anext(inner)  # the router has the first chunk in hand
    result = StreamResult(source=wrapper(first, inner))
    result.on_finish.append(finished.append)
    await result.close()
    assert closed == ["upstream"] and len(finished) == 1  # while ``result`` is still referenced: no GC needed
    await result.close()
    async for _ in result.chunks():
        pass
    assert len(finished) == 1  # the callbacks run once, whoever ends the stream
