"""Request bodies are bounded in size and in time on every route, public ones included, over raw sockets.

``POST /ui/login`` needs no key; it used to read whatever it was sent (1 GiB → 2.1 GB RSS) for as
long as the client took to send it. These tests talk HTTP/1.1 by hand so they can lie about
``Content-Length``, send chunks, and drip bytes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from opsgate.server.http_io import _arrived, _BoundedReceive
from tests.support import Gateway, start_gateway

ADMIN_KEY = "bootstrap-admin-key-for-body-tests-0123456789"
BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    started = start_gateway(
        {
            "server": {"body_timeout_seconds": BODY_TIMEOUT, "max_body_bytes": 8192},
            "auth": {"enabled": True, "admin_key": ADMIN_KEY},
            "models": [
                {"name": "up", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}]}
            ],
        }
    )
    yield started
    started.server.stop()


def _connect(gateway: Gateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.server.port), timeout=15)
    return sock


def _head(path: str, gateway: Gateway, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{gateway.server.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response (status, lower-cased headers, body); the socket's timeout bounds the wait."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (EOF or reset) within the socket's timeout."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return True


def _error_code(body: bytes) -> str:
    error = orjson.loads(body)["error"]
    assert set(error) >= {"message", "type", "param", "code"}  # the OpenAI error shape
    return str(error["code"])


def _form_headers(gateway: Gateway) -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded", "Origin": gateway.url}


def test_a_huge_declared_login_body_is_refused_before_it_is_read(gateway: Gateway) -> None:
    with _connect(gateway) as sock:
        sock.sendall(_head("/ui/login", gateway, {**_form_headers(gateway), "Content-Length": str(1 << 30)}))
        sock.sendall(b"key=" + b"x" * 60_000)  # the start of a gigabyte that never needs to arrive
        status, headers, body = _response(sock)
        assert status == 413 and _error_code(body) == "body_too_large"
        assert headers.get("connection") == "close"


def test_a_chunked_login_body_is_cut_off_at_the_form_limit(gateway: Gateway) -> None:
    with _connect(gateway) as sock:
        sock.sendall(_head("/ui/login", gateway, {**_form_headers(gateway), "Transfer-Encoding": "chunked"}))
        sent = 0
        try:
            while sent < 1 << 20:  # a megabyte, where the limit is 4 KiB: the answer comes long before
                sock.sendall(b"400\r\n" + b"k" * 1024 + b"\r\n")
                sent += 1024
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us after the 413, which is what we want
        status, _, body = _response(sock)
        assert status == 413 and _error_code(body) == "body_too_large"


def test_a_body_that_arrives_too_slowly_is_cut_off_with_408(gateway: Gateway) -> None:
    with _connect(gateway) as sock:
        sock.sendall(_head("/ui/login", gateway, {**_form_headers(gateway), "Content-Length": "100"}))
        sock.sendall(b"key=abc")  # then nothing: the rest never comes
        started = time.monotonic()
        status, headers, body = _response(sock)
        assert status == 408 and _error_code(body) == "body_timeout"
        assert BODY_TIMEOUT * 0.9 <= time.monotonic() - started < BODY_TIMEOUT + 10  # generous: loaded machines
        assert headers.get("connection") == "close" and _closed(sock)


def test_a_dripping_body_is_cut_off_even_though_each_byte_is_on_time(gateway: Gateway) -> None:
    with _connect(gateway) as sock:
        sock.sendall(_head("/admin/erasure", gateway, {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Length": "64"}))
        started = time.monotonic()
        sock.settimeout(0.2)
        status = 0
        while time.monotonic() - started < BODY_TIMEOUT + 10:
            try:
                sock.sendall(b" ")  # one byte every 0.2 s: never idle, never done
                status, _, body = _response(sock)
                break
            except TimeoutError:
                continue
        assert status == 408 and _error_code(body) == "body_timeout"


def test_inference_and_admin_bodies_have_their_own_limits(gateway: Gateway) -> None:
    key = {"Authorization": f"Bearer {ADMIN_KEY}"}
    big_chat = {"model": "up", "messages": [{"role": "user", "content": "x" * 10_000}]}
    chat = httpx.post(gateway.url + "/v1/chat/completions", json=big_chat, headers=key, timeout=30)
    assert chat.status_code == 413 and chat.json()["error"]["code"] == "body_too_large"  # server.max_body_bytes

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"user": "'
        for _ in range(100):
            yield b"u" * 1024
        yield b'"}'

    erasure = httpx.post(
        gateway.url + "/admin/erasure",
        content=chunks(),
        headers={**key, "Content-Type": "application/json"},
        timeout=30,
    )
    assert erasure.status_code == 413 and erasure.json()["error"]["code"] == "body_too_large"  # 64 KiB


def test_a_content_length_that_is_not_a_number_is_400(gateway: Gateway) -> None:
    with _connect(gateway) as sock:
        sock.sendall(_head("/ui/login", gateway, {**_form_headers(gateway), "Content-Length": "1e9"}))
        status, _, _ = _response(sock)
        assert status == 400  # uvicorn or the gateway: either way a 4xx, never a read


def test_the_gateway_serves_others_while_a_slow_body_is_pending(gateway: Gateway) -> None:
    with _connect(gateway) as sock:
        sock.sendall(_head("/ui/login", gateway, {**_form_headers(gateway), "Content-Length": "100"}))
        started = time.monotonic()
        assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200
        assert time.monotonic() - started < BODY_TIMEOUT  # not queued behind the slow client
        assert _response(sock)[0] == 408
    login = httpx.post(
        gateway.url + "/ui/login",
        data={"key": ADMIN_KEY},
        headers={"Origin": gateway.url},
        follow_redirects=False,
    )
    assert login.status_code == 303 and "opsgate_session" in login.headers["set-cookie"]  # the form still works


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\n\r\nkey=a" + b"GARBAGE " * 200,  # more body than declared: never a second request
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nkey=a\r\n0\r\n\r\n",  # smuggling shape
        b"Content-Length: 99999999999999999999999\r\n\r\n",
    ],
)
def test_lying_framing_is_a_4xx_and_harms_nobody(gateway: Gateway, framing: bytes) -> None:
    with _connect(gateway) as sock:
        head = _head("/ui/login", gateway, _form_headers(gateway))[:-2]  # leave the blank line to the framing
        sock.sendall(head + framing)
        status, _, _ = _response(sock)
        assert 400 <= status < 500
    assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200


def test_the_login_form_must_be_a_form(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.url + "/ui/login",
        files={"key": ("key.txt", b"x" * 10)},  # multipart
        headers={"Origin": gateway.url},
    )
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"


def test_a_message_already_in_hand_is_read_without_arming_the_body_timer() -> None:
    # _BoundedReceive skips asyncio.timeout_at when uvicorn's cycle has the message (message_event set).
    class Cycle:
        def __init__(self) -> None:
            self.message_event = asyncio.Event()

        async def receive(self) -> dict[str, object]:
            await self.message_event.wait()
            return {"type": "http.request", "body": b"abc", "more_body": False}

    async def plain() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def scenario() -> None:
        cycle = Cycle()
        assert not _arrived(cycle.receive) and not _arrived(plain)
        cycle.message_event.set()
        assert _arrived(cycle.receive)
        bounded = _BoundedReceive(cycle.receive, max_bytes=2, timeout=5.0)
        try:
            await bounded()
        except Exception as error:  # counted as ever: 3 bytes past a 2-byte cap
            assert getattr(error, "status", None) == 413
        else:
            raise AssertionError("the size cap was not applied on the fast path")
        slow = Cycle()
        bounded = _BoundedReceive(slow.receive, max_bytes=10, timeout=0.05)
        try:
            await bounded()  # never arrives: the timer path answers 408
        except Exception as error:
            assert getattr(error, "status", None) == 408
        else:
            raise AssertionError("no body timeout")

    asyncio.run(scenario())
