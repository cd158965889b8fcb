"""Fixtures for the guard tests: an upstream that streams a scripted text, and gateways in front of it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.fake_upstream import FakeUpstream, Script


class TextUpstream(FakeUpstream):
    """The fake upstream, but a stream carries ``script.content`` in small pieces (not ``w0 w1 …``).

    Pieces are 7 characters, so placeholders and identifiers are cut across chunks as they would be
    by a tokenizer; ``logprob`` (when set) is attached to each piece when the request asks for logprobs.
    """

    logprob: float | None = None

    async def _stream(self, request: web.Request, body: dict[str, Any], chat: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(obj: Any) -> None:
            await response.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        base = {"id": "up-s", "object": "chat.completion.chunk", "created": int(time.time()), "model": body["model"]}
        text = self.script.content
        for start in range(0, len(text), 7):
            piece = text[start : start + 7]
            logprobs = None
            if body.get("logprobs") and self.logprob is not None:
                logprobs = {"content": [{"token": piece, "logprob": self.logprob, "bytes": None, "top_logprobs": []}]}
            await send({**base, "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": logprobs}]})
            await asyncio.sleep(0.001)
        await send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        usage = {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}
        await send({**base, "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture(scope="session")
def text_upstream_server() -> Iterator[TextUpstream]:
    server = TextUpstream().start()
    yield server
    server.stop()


@pytest.fixture()
def text_upstream(text_upstream_server: TextUpstream) -> Iterator[TextUpstream]:
    """The streaming text upstream, reset for each test."""
    text_upstream_server.script = Script()
    text_upstream_server.requests.clear()
    text_upstream_server.logprob = None
    yield text_upstream_server


def guarded_config(base_url: str, guard: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One chat alias ``up`` (and ``up-strict``) on the upstream, with ``guard`` as the guard config."""
    deployment = {"type": "openai", "base_url": base_url, "model": "real-model", "breaker": {"enabled": False}}
    return {
        "models": [
            {"name": "up", "routing": {"retries": 0}, "deployments": [deployment]},
            {"name": "up-strict", "routing": {"retries": 0}, "deployments": [deployment]},
        ],
        "guard": {"enabled": True, **guard},
        **extra,
    }
