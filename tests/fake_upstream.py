"""A scripted OpenAI-compatible upstream on loopback (a real HTTP server, behaviour set per test)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support import free_port


@dataclass
class Script:
    """What the upstream does next. ``mode``: ok | status | malformed | truncate | stream_error | reset | hang.

    ``delay`` adds latency before any mode; ``fail_first`` makes only the first N requests misbehave
    (then ``mode`` falls back to ok), for scripted outages.
    """

    mode: str = "ok"
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content: str = "Hello from upstream"
    words: int = 5
    fail_first: int | None = None


class FakeUpstream:
    """Serves /v1/chat/completions, /v1/completions and /v1/embeddings per ``self.script``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.script = Script()
        self.requests: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeUpstream:
        self.thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread.join(10)

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()  # handlers still "hanging" on purpose
        await asyncio.gather(*pending, return_exceptions=True)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 * 1024 * 1024)  # real engines take multi-MB prompts
        app.router.add_post("/v1/chat/completions", self._completion)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)  # do not wait for "hang" handlers
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def _record(self, request: web.Request, body: dict[str, Any]) -> None:
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._record(request, body)
        if self.script.mode == "status":
            return web.json_response(self.script.body, status=self.script.status, headers=self.script.headers)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "model": body["model"],
                "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))],
                "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
            }
        )

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._record(request, body)
        script = self.script
        if script.fail_first is not None and len(self.requests) > script.fail_first:
            script = Script(delay=script.delay, content=script.content, words=script.words)
        chat = request.path.endswith("/chat/completions")
        if script.delay:
            await asyncio.sleep(script.delay)
        if script.mode == "status":
            if isinstance(script.body, (dict, list)):
                return web.json_response(script.body, status=script.status, headers=script.headers)
            return web.Response(text=str(script.body or ""), status=script.status, headers=script.headers)
        if script.mode == "reset":
            assert request.transport is not None
            request.transport.close()  # connection reset before any response byte
            return web.Response()
        if script.mode == "hang":
            await asyncio.sleep(60)
        if script.mode == "malformed":
            return web.Response(text='{"choices": [', content_type="application/json")
        if body.get("stream"):
            return await self._stream(request, body, chat)
        text = script.content
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "stop"}
        )
        return web.json_response(
            {
                "id": "up-1",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [choice],
                "usage": {
                    "prompt_tokens": 7,
                    "completion_tokens": script.words,
                    "total_tokens": 7 + script.words,
                },
            }
        )

    async def _stream(self, request: web.Request, body: dict[str, Any], chat: bool) -> web.StreamResponse:
        script = self.script
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(obj: Any) -> None:
            await response.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        base = {
            "id": "up-s",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": body["model"],
        }
        words = [f"w{i} " for i in range(script.words)]
        for index, word in enumerate(words):
            if script.mode == "truncate" and index == 2:
                return response  # ends without finish, usage or [DONE]
            if script.mode == "stream_error" and index == 2:
                await send({"error": {"message": "upstream exploded", "type": "server_error"}})
                return response
            choice = (
                {"index": 0, "delta": {"content": word}, "finish_reason": None}
                if chat
                else {"index": 0, "text": word, "finish_reason": None}
            )
            await send({**base, "choices": [choice]})
            await asyncio.sleep(0.001)
        final = (
            {"index": 0, "delta": {}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": "", "finish_reason": "stop"}
        )
        await send({**base, "choices": [final]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(
                {
                    **base,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 7,
                        "completion_tokens": script.words,
                        "total_tokens": 7 + script.words,
                    },
                }
            )
        await response.write(b"data: [DONE]\n\n")
        return response
