"""An upstream on loopback that answers exactly the bytes a test scripts: hostile streams and bodies.

``tests/fake_upstream.py`` speaks well-formed OpenAI; this one sends what it is told — an event
of any size, a chunk of any type, a body of any length — so tests can drive the gateway's
handling of a misbehaving deployment over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
from aiohttp import web

from tests.support import Gateway, free_port, start_gateway

HEAD = {"id": "h-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
MESSAGES = [{"role": "user", "content": "a long answer, please"}]
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def event(obj: Any) -> bytes:
    """One SSE event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def delta_event(delta: Any, finish: Any = None) -> bytes:
    """A chat chunk event with one choice holding ``delta``."""
    return event({**HEAD, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def ending() -> list[bytes]:
    """A stream's proper end: the finish chunk, the usage chunk, ``[DONE]``."""
    return [delta_event({}, "stop"), event({**HEAD, "choices": [], "usage": USAGE}), b"data: [DONE]\n\n"]


def whole_stream(*middle: bytes) -> list[bytes]:
    """A role chunk, ``middle``, then the proper end."""
    return [delta_event({"role": "assistant", "content": "start "}), *middle, *ending()]


class HostileUpstream:
    """Streams ``self.stream`` (a list of byte strings) or answers ``self.body`` as JSON, per request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.stream: list[bytes] = whole_stream()
        self.body: bytes = b"{}"
        self.chunked_body = False  # send ``body`` without a Content-Length
        self.requests = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._answer)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests += 1
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            try:
                for part in self.stream:
                    await response.write(part)
            except (ConnectionResetError, asyncio.CancelledError):
                pass  # the gateway dropped the connection: expected when it refuses an answer
            return response
        if self.chunked_body:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                for start in range(0, len(self.body), 1 << 20):
                    await response.write(self.body[start : start + (1 << 20)])
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            return response
        return web.Response(body=self.body, content_type="application/json")

    def start(self) -> HostileUpstream:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


def hostile_server() -> Iterator[HostileUpstream]:
    """Fixture body: one hostile upstream for a module."""
    server = HostileUpstream().start()
    yield server
    server.stop()


def chat_config(base_url: str, cache: bool = False, **deployment: Any) -> dict[str, Any]:
    """Alias ``up`` on the hostile upstream: no retries, a breaker that opens on 2 consecutive failures."""
    config: dict[str, Any] = {
        "models": [
            {
                "name": "up",
                "routing": {"retries": 0},
                "deployments": [
                    {
                        "type": "openai",
                        "base_url": base_url,
                        "model": "real-model",
                        "timeouts": {"first_byte": 30, "total": 60},
                        "breaker": {"enabled": True, "consecutive_failures": 2, "open_seconds": 600},
                        **deployment,
                    }
                ],
            }
        ]
    }
    if cache:
        config["cache"] = {"enabled": True}
    return config


def gateway_for(hostile: HostileUpstream, cache: bool = False, **deployment: Any) -> Gateway:
    return start_gateway(chat_config(hostile.base_url, cache=cache, **deployment))


def chat(gateway: Gateway, request_id: str, stream: bool = True) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "up", "messages": MESSAGES, "stream": stream},
        headers={"x-request-id": request_id},
        timeout=120,
    )


def events(response: httpx.Response) -> list[Any]:
    """The SSE events' data, parsed (``[DONE]`` kept as the string)."""
    out: list[Any] = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_bad_response(error: dict[str, Any]) -> None:
    """The OpenAI error shape, saying the upstream answered badly — no exception class names."""
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["code"] == "upstream_bad_response" and error["type"] == "upstream_error", error
    for internal in ("LineTooLong", "AttributeError", "TypeError", "Got more than"):
        assert internal not in error["message"]


def record_of(gateway: Gateway, request_id: str) -> dict[str, Any]:
    [record] = gateway.records_for(request_id, timeout=30)
    return record
