"""Request heads are bounded in bytes (431) and in time (408) before any app code runs.

uvicorn's httptools protocol buffered a header line however long it grew (300 MB sent, +304 MB RSS) and
kept no clock on a head, so connections dripping header bytes were held for ever, before authentication.
These tests talk HTTP/1.1 by hand over loopback: to uvicorn servers running ``HeadLimitedHttpToolsProtocol``
on both loops ``serve`` may use, and to a real ``opsgate serve`` process (which fails on the old wiring).
"""

from __future__ import annotations

import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.domain.config import ConfigError, parse_config
from opsgate.server.http_limits import HeadLimitedHttpToolsProtocol, http_protocol
from tests.support import free_port, serve_process

MAX_HEAD = 20 * 1024
HEAD_TIMEOUT = 1.0


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the number of header fields and body bytes it got."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        await send({"type": "lifespan.shutdown.complete"})
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"%d headers, %d bytes" % (len(scope["headers"]), size)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class _Server:
    def __init__(self, loop: str) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                _echo,
                host="127.0.0.1",
                port=self.port,
                loop=loop,
                http=http_protocol(MAX_HEAD, HEAD_TIMEOUT),
                log_level="warning",
                lifespan="off",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    started = _Server(request.param)
    yield started
    started.stop()


def _connect(port: int, timeout: float = 20.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _head(headers: dict[str, str], method: str = "GET", path: str = "/") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-cased headers, body); the socket's timeout bounds the wait."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):  # byte by byte: the next pipelined response stays in the socket
        byte = sock.recv(1)
        if not byte:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += byte
    status_line, *lines = data[:-4].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def _closed(sock: socket.socket) -> bool:
    """Whether the server closes the connection within the socket's timeout (EOF or reset)."""
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        return False
    return True


def _send_all_or_reset(sock: socket.socket, data: bytes, piece: int = 65536) -> int:
    """Sends ``data`` in pieces until done or the server resets/closes; returns the bytes sent."""
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent : sent + piece])
    except (ConnectionResetError, BrokenPipeError):
        pass
    return sent


# Requests that pass


def test_normal_requests_with_large_allowed_heads_reuse_one_connection(server: _Server) -> None:
    with _connect(server.port) as sock:
        for size in (10, 16 * 1024, 100):
            sock.sendall(_head({"X-Big": "v" * size, "Content-Length": "5"}, "POST") + b"hello")
            status, headers, body = _response(sock)
            assert (status, body) == (200, b"3 headers, 5 bytes")
            assert headers.get("connection") != "close"


def test_a_head_sent_in_pieces_within_the_timeout_passes(server: _Server) -> None:
    head = _head({"X-A": "a" * 4000, "X-B": "b" * 4000})
    with _connect(server.port) as sock:
        for start in range(0, len(head), 2000):
            sock.sendall(head[start : start + 2000])
            time.sleep(0.05)
        assert _response(sock)[0] == 200


def test_a_slow_body_and_a_long_pause_between_requests_are_not_the_head_timeouts(server: _Server) -> None:
    with _connect(server.port) as sock:
        sock.sendall(_head({"Content-Length": "4"}, "POST") + b"ab")
        time.sleep(HEAD_TIMEOUT * 2.5)  # the body's time: server.body_timeout_seconds is the app's
        sock.sendall(b"cd")
        assert _response(sock)[2] == b"2 headers, 4 bytes"
        time.sleep(HEAD_TIMEOUT * 0.5)  # idle between requests (uvicorn's keep-alive is 5 s)
        sock.sendall(_head({}))
        assert _response(sock)[0] == 200


def test_pipelined_requests_pass(server: _Server) -> None:
    with _connect(server.port) as sock:
        sock.sendall(_head({"X-A": "a" * 8000}) * 3)
        assert [_response(sock)[0] for _ in range(3)] == [200, 200, 200]


# Heads too large


def test_a_1_mb_head_is_refused_with_431_and_the_connection_closed(server: _Server) -> None:
    with _connect(server.port) as sock:
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Flood: " + b"a" * (1024 * 1024) + b"\r\n\r\n"
        sent = _send_all_or_reset(sock, head)
        status, headers, body = _response(sock)
        assert (status, headers["connection"], headers["content-type"]) == (431, "close", "application/json")
        assert orjson.loads(body)["error"]["code"] == "request_header_fields_too_large"
        assert _closed(sock)
    assert sent <= len(head)


def test_many_header_lines_are_counted_like_one_long_one(server: _Server) -> None:
    with _connect(server.port) as sock:
        lines = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(5000))  # 500 KB in short lines
        _send_all_or_reset(sock, b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        assert _response(sock)[0] == 431
        assert _closed(sock)


def test_a_too_large_head_arriving_in_one_read_is_refused_too(server: _Server) -> None:
    """Complete within one read (no chance to count it open): measured from its parsed parts."""
    with _connect(server.port) as sock:
        sock.sendall(_head({"X-Big": "v" * (MAX_HEAD + 100)}))
        status, headers, _ = _response(sock)
        assert (status, headers["connection"]) == (431, "close")
        assert _closed(sock)


def test_a_too_large_head_after_a_good_request_is_refused(server: _Server) -> None:
    with _connect(server.port) as sock:
        sock.sendall(_head({}))
        assert _response(sock)[0] == 200
        _send_all_or_reset(sock, _head({"X-Big": "v" * (4 * MAX_HEAD)}))
        assert _response(sock)[0] == 431
        assert _closed(sock)


def test_a_long_url_counts(server: _Server) -> None:
    with _connect(server.port) as sock:
        _send_all_or_reset(sock, _head({}, path="/" + "p" * (2 * MAX_HEAD)))
        assert _response(sock)[0] == 431


# Heads too slow


def test_a_dripping_head_is_answered_408_and_closed(server: _Server) -> None:
    with _connect(server.port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-A: ")
        started = time.monotonic()
        got = b""
        sock.settimeout(0.2)
        while time.monotonic() - started < 30:  # generous: the limit is 1 s
            try:
                sock.send(b"a")
            except (ConnectionResetError, BrokenPipeError):
                break
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        assert time.monotonic() - started < 30, "a dripping head was held 30 s"
        assert got.startswith(b"HTTP/1.1 408 "), got


def test_a_connection_that_sends_nothing_is_closed(server: _Server) -> None:
    with _connect(server.port, timeout=30) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed without an answer
        assert time.monotonic() - started >= HEAD_TIMEOUT * 0.9


def test_a_dripping_second_head_on_a_kept_alive_connection_is_closed(server: _Server) -> None:
    with _connect(server.port, timeout=30) as sock:
        sock.sendall(_head({}))
        assert _response(sock)[0] == 200
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more: uvicorn's keep-alive timer stopped at this byte
        status, _, body = _response(sock)
        assert status == 408 and orjson.loads(body)["error"]["code"] == "request_timeout"
        assert _closed(sock)


def test_many_dripping_connections_are_all_closed(server: _Server) -> None:
    socks = [_connect(server.port, timeout=30) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nX: ")
        deadline = time.monotonic() + 30
        for sock in socks:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert _closed(sock)
    finally:
        for sock in socks:
            sock.close()


# The protocol's own checks and its wiring into serve and config


def test_http_protocol_pickles_for_worker_processes() -> None:
    factory = pickle.loads(pickle.dumps(http_protocol(8192, 3.0)))
    assert factory.func is HeadLimitedHttpToolsProtocol
    assert factory.keywords == {"max_head_bytes": 8192, "head_timeout": 3.0}
    for bad in ((0, 1.0), (8192, 0.0), (8192, float("nan")), (8192, float("inf"))):
        with pytest.raises(ValueError):
            http_protocol(*bad)


CONFIG = """
models:
  - name: up
    deployments:
      - {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}
record: {store: 'sqlite:///%s'}
"""


def test_serve_passes_the_configured_limits_to_uvicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        CONFIG % (tmp_path / "records.db") + "server: {max_header_bytes: 8192, header_timeout_seconds: 3}\n"
    )
    for name in ("OPSGATE_CONFIG", "OPSGATE_LOG_LEVEL", "OPSGATE_WORKERS"):
        monkeypatch.setenv(name, "")  # serve sets these for its workers: restored after the test
        monkeypatch.delenv(name)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    result = CliRunner().invoke(cli, ["serve", "--config", str(path), "--workers", "2", "--port", "9"])
    assert result.exit_code == 0, result.output
    factory = calls[0]["http"]
    assert factory.func is HeadLimitedHttpToolsProtocol
    assert factory.keywords == {"max_head_bytes": 8192, "head_timeout": 3.0}


def test_the_defaults() -> None:
    server = parse_config({"models": []}).server
    assert (server.max_header_bytes, server.header_timeout_seconds) == (64 * 1024, 15.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_header_bytes", 0),
        ("max_header_bytes", -1),
        ("max_header_bytes", 100),
        ("max_header_bytes", 2**31),
        ("max_header_bytes", 8192.5),
        ("max_header_bytes", "big"),
        ("header_timeout_seconds", 0),
        ("header_timeout_seconds", -1),
        ("header_timeout_seconds", 0.01),
        ("header_timeout_seconds", float("nan")),
        ("header_timeout_seconds", float("inf")),
        ("header_timeout_seconds", 1e9),
        ("header_timeout_seconds", None),
    ],
)
def test_out_of_range_limits_are_refused_at_load(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_config({"models": [], "server": {field: value}})


# The real process


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    directory = tmp_path_factory.mktemp("serve")
    path = directory / "config.yaml"
    path.write_text(CONFIG % (directory / "records.db") + "server: {header_timeout_seconds: 1}\n")
    with serve_process(path, log=directory / "serve.log", timeout=120) as (process, url):
        yield process.pid, int(url.rsplit(":", 1)[1])


def test_serve_refuses_a_header_flood_without_growing(served: tuple[int, int]) -> None:
    """Before: 32 MB sent into one header line were all buffered (RSS grew by more than that), no answer."""
    pid, port = served
    before = _rss_kb(pid)
    with _connect(port) as sock:
        sent = _send_all_or_reset(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: " + b"a" * (32 << 20))
        grown_mb = (_rss_kb(pid) - before) / 1024
        status, _, _ = _response(sock)
        assert status == 431
        assert _closed(sock)
    assert grown_mb < 8, f"RSS grew {grown_mb:.1f} MB while {sent >> 20} MB of header were sent"
    with _connect(port) as sock:  # the server still serves
        sock.sendall(_head({"X-Big": "v" * 16000}, path="/healthz"))
        assert _response(sock)[0] == 200


def test_serve_closes_dripping_heads(served: tuple[int, int]) -> None:
    _, port = served
    socks = [_connect(port, timeout=30) for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ")
        time.sleep(0.5)
        for sock in socks:
            sock.sendall(b"a")
        deadline = time.monotonic() + 30
        for sock in socks:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert _response(sock)[0] == 408
            assert _closed(sock)
    finally:
        for sock in socks:
            sock.close()
