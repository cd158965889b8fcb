"""The overhead benchmark's floor: a bare Starlette + aiohttp proxy (no auth, no log, no metrics).

``python bench/_bare_proxy.py UPSTREAM_BASE PORT``: POST /v1/chat/completions goes to
UPSTREAM_BASE/chat/completions over one shared aiohttp session; the upstream's bytes and status come
back. uvicorn runs it as ``opsgate serve`` does with one worker (uvloop, httptools, no access log).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

UPSTREAM = sys.argv[1].rstrip("/") + "/chat/completions"
session: aiohttp.ClientSession | None = None


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global session
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30))
    yield
    await session.close()


async def chat(request: Request) -> Response:
    assert session is not None
    body = await request.body()
    async with session.post(UPSTREAM, data=body, headers={"Content-Type": "application/json"}) as upstream:
        return Response(await upstream.read(), upstream.status, media_type="application/json")


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/healthz", healthz)], lifespan=lifespan
)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
