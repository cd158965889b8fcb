"""The stage's stream wrapper on its own: windows, tool-call deltas, logprobs, and closing the source."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from opsgate.domain.config import parse_config
from opsgate.domain.context import Chunk, RequestContext, StreamResult
from opsgate.domain.errors import GatewayError
from opsgate.pipeline.guard import GuardStage
from opsgate.pipeline.validation import ValidationStage

CONFIG = parse_config(
    {
        "models": [
            {"name": "m", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}]}
        ],
        "guard": {
            "enabled": True,
            "stream_window_chars": 40,
            "policies": [
                {
                    "name": "p",
                    "input": [],
                    "output": [{"scanner": "pii", "action": "redact"}, {"scanner": "toxicity", "action": "block"}],
                }
            ],
        },
    }
)


def chunk(content: str | None = None, **delta: Any) -> Chunk:
    if content is not None:
        delta["content"] = content
    return {"id": "c", "object": "chat.completion.chunk", "model": "x", "choices": [{"index": 0, "delta": delta}]}


class Source:
    """An async chunk source that remembers whether it was closed."""

    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks = chunks
        self.closed = False

    async def generate(self) -> AsyncIterator[Chunk]:
        try:
            for item in self.chunks:
                yield item
        finally:
            self.closed = True


async def guarded(chunks: list[Chunk]) -> tuple[list[Chunk], Source, RequestContext]:
    stage = GuardStage.from_config(CONFIG)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ctx = RequestContext(endpoint="chat", raw_body=json.dumps(body).encode(), headers={})
    await ValidationStage(CONFIG).before(ctx)
    await stage.before(ctx)
    source = Source(chunks)
    response = await stage.after(ctx, StreamResult(source=source.generate()))
    assert isinstance(response, StreamResult)
    out: list[Chunk] = []
    async for item in response.chunks():
        out.append(item)
    return out, source, ctx


def text_of(chunks: list[Chunk]) -> str:
    return "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks if c.get("choices"))


async def test_text_is_released_in_windows_cut_at_sentence_ends() -> None:
    pieces = ["First sentence is ", "here. Second one fol", "lows, and a third. ", "End"]
    out, source, _ = await guarded([chunk(role="assistant"), *(chunk(p) for p in pieces)])
    assert text_of(out) == "".join(pieces)
    contents = [(c["choices"][0]["delta"] or {}).get("content") for c in out[1:]]
    # The first full window is cut after its last sentence end, never mid-word; the rest leaves at the end.
    assert contents == ["First sentence is here. Second one follows, and a third.", " End"]
    assert source.closed


async def test_tool_call_deltas_pass_after_the_text_before_them() -> None:
    call = {"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    out, _, _ = await guarded([chunk("Calling 415-555-2671 now"), chunk(tool_calls=[call])])
    kinds = ["tool" if c["choices"][0]["delta"].get("tool_calls") else "text" for c in out]
    assert kinds == ["text", "tool"]
    assert text_of(out) == "Calling <PHONE> now"


async def test_a_block_ends_the_stream_and_closes_the_source_at_once() -> None:
    stage = GuardStage.from_config(CONFIG)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ctx = RequestContext(endpoint="chat", raw_body=json.dumps(body).encode(), headers={})
    await ValidationStage(CONFIG).before(ctx)
    await stage.before(ctx)
    clean = "All good here. " * 4
    source = Source([chunk(clean), chunk("You are a fucking idiot. "), *(chunk("never produced. ") for _ in range(9))])
    response = await stage.after(ctx, StreamResult(source=source.generate()))
    assert isinstance(response, StreamResult)
    received: list[Chunk] = []
    with pytest.raises(GatewayError) as caught:
        async for item in response.chunks():
            received.append(item)
    assert caught.value.status == 422 and caught.value.code == "output_blocked"
    assert text_of(received) == clean.rstrip()  # the clean window left; the toxic one never did
    assert source.closed and response.outcome.error is caught.value
    assert ctx.tags["guard"]["output"][1]["scanner"] == "toxicity"
