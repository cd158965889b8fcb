"""A webhook receiver on loopback that records every POST; it can fail the first N calls with 500."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from tests.support import free_port


class WebhookReceiver:
    """Collects JSON bodies posted to ``/hook``; ``fail_first`` calls answer 500 (to exercise retries)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.port = free_port()
        self.fail_first = fail_first
        self.calls = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread.join(10)

    async def _hook(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.fail_first:
            return web.Response(status=500, text="try again")
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        return web.Response(status=204)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
