"""An OpenAI-compatible upstream whose pace each request sets, for drain, reload and soak tests.

A user message ``delay=0.5 chunks=20 gap=0.1`` makes the answer wait 0.5 s, and a stream send 20
chunks 0.1 s apart. The answer's content names the ``tag`` the server was started with, so a test
can tell which upstream served. Runs in a thread (tests) or as a process (``python -m``, the soak).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
from typing import Any

from aiohttp import web

_PACE = re.compile(r"(delay|chunks|gap)=([0-9.]+)")


def _pace(body: dict[str, Any]) -> dict[str, float]:
    text = " ".join(str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict))
    pace = {"delay": 0.0, "chunks": 3.0, "gap": 0.0}
    pace.update({key: float(value) for key, value in _PACE.findall(text)})
    return pace


def build_app(tag: str) -> web.Application:
    """The upstream's routes: chat completions (plain and streamed) and embeddings."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        pace = _pace(body)
        await asyncio.sleep(pace["delay"])
        base = {"id": "up", "created": int(time.time()), "model": body.get("model", "m")}
        usage = {"prompt_tokens": 5, "completion_tokens": int(pace["chunks"]), "total_tokens": 5 + int(pace["chunks"])}
        if not body.get("stream"):
            message = {"role": "assistant", "content": f"{tag}: " + "w " * int(pace["chunks"])}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {**base, "object": "chat.completion.chunk"}
        for index in range(int(pace["chunks"])):
            delta = {"content": f"{tag} " if index == 0 else "w "}
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            await response.write(b"data: " + json.dumps({**chunk, "choices": [choice]}).encode() + b"\n\n")
            if pace["gap"]:
                await asyncio.sleep(pace["gap"])
        final = {"index": 0, "delta": {}, "finish_reason": "stop"}
        await response.write(b"data: " + json.dumps({**chunk, "choices": [final]}).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(b"data: " + json.dumps({**chunk, "choices": [], "usage": usage}).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]} for i in range(count)]
        usage = {"prompt_tokens": 3 * count, "total_tokens": 3 * count}
        return web.json_response({"object": "list", "data": data, "model": body.get("model", "e"), "usage": usage})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    return app


class PacedUpstream:
    """The upstream in a background thread on 127.0.0.1:``port``."""

    def __init__(self, port: int, tag: str = "up") -> None:
        self.port = port
        self.tag = tag
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(build_app(tag), shutdown_timeout=1.0)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> PacedUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    """``python -m tests.deploy.upstream --port N [--tag T]``: serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tag", default="up")
    args = parser.parse_args()
    web.run_app(build_app(args.tag), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
