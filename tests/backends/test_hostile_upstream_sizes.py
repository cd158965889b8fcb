"""An upstream answer has a bound: ``max_response_bytes`` (a whole body, or a stream's lines in all).

A misbehaving deployment that sent 1.5 GB grew the process by 4 GB and made a record over 2 GiB.
Past the bound: 502 ``upstream_bad_response`` in the OpenAI shape (a stream ends with that error
event), recorded with ``tags.answer_too_large`` and, for a stream, the text received until then;
the breaker is not judged (a client may have asked for a long answer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from opsgate.backends.upstream_read import LineTooLong, read_lines
from tests.backends.hostile_upstream import (
    HostileUpstream,
    assert_bad_response,
    chat,
    delta_event,
    events,
    gateway_for,
    hostile_server,
    record_of,
    whole_stream,
)
from tests.support import Gateway

KiB = 1024
LIMIT = 256 * KiB


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    yield from hostile_server()


@pytest.fixture()
def gateway(hostile: HostileUpstream) -> Iterator[Gateway]:
    hostile.chunked_body = False
    gateway = gateway_for(hostile, max_response_bytes=LIMIT)
    yield gateway
    gateway.server.stop()


def completion(content: str) -> bytes:
    return json.dumps(
        {
            "id": "h-1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
    ).encode()


def test_a_stream_past_the_bound_ends_with_a_502_event_and_a_truncated_record(
    gateway: Gateway, hostile: HostileUpstream
) -> None:
    piece = "p" * (32 * KiB)
    hostile.stream = whole_stream(*[delta_event({"content": piece})] * 20)  # 640 KiB in 20 events
    response = chat(gateway, "long-stream")
    assert response.status_code == 200
    got = events(response)
    assert "[DONE]" not in got
    assert_bad_response(got[-1]["error"])
    relayed = "".join(e["choices"][0]["delta"].get("content") or "" for e in got[:-1])
    assert 0 < len(relayed) < LIMIT
    record = record_of(gateway, "long-stream")
    assert record["status"] == 502 and record["error_type"] == "upstream_error"
    assert record["tags"]["answer_too_large"] == {"limit": "max_response_bytes", "bytes": LIMIT}
    stored = record["response"]
    assert record["output_text"] == relayed
    assert (json.loads(stored) if isinstance(stored, str) else stored)["partial"] is True


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_past_the_bound_is_a_502_that_spares_the_breaker(
    gateway: Gateway, hostile: HostileUpstream, chunked: bool
) -> None:
    hostile.body, hostile.chunked_body = completion("b" * (2 * LIMIT)), chunked
    for attempt in range(3):  # the breaker opens on 2 consecutive failures
        response = chat(gateway, f"long-body-{attempt}", stream=False)
        assert response.status_code == 502
        assert_bad_response(response.json()["error"])
        record = record_of(gateway, f"long-body-{attempt}")
        assert record["status"] == 502
        assert record["tags"]["answer_too_large"] == {"limit": "max_response_bytes", "bytes": LIMIT}
    hostile.body = completion("within bounds")
    response = chat(gateway, "body-after", stream=False)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "within bounds"


def test_an_event_limit_above_the_answer_bound_is_held_to_it(hostile: HostileUpstream) -> None:
    gateway = gateway_for(hostile, max_response_bytes=LIMIT, max_event_bytes=4 * LIMIT)
    try:
        hostile.stream = whole_stream(delta_event({"content": "e" * (LIMIT + KiB)}))
        got = events(chat(gateway, "event-over-answer"))
        assert_bad_response(got[-1]["error"])
        tags = record_of(gateway, "event-over-answer")["tags"]
        assert tags["answer_too_large"] == {"limit": "max_response_bytes", "bytes": LIMIT}
    finally:
        gateway.server.stop()


def test_the_bounds_are_configurable_and_validated() -> None:
    from opsgate.domain.config import ConfigError, parse_config
    from tests.backends.hostile_upstream import chat_config

    config = parse_config(chat_config("http://127.0.0.1:9/v1"))
    deployment: Any = config.models[0].deployments[0]
    assert deployment.max_event_bytes == 16 * 1024 * KiB and deployment.max_response_bytes == 64 * 1024 * KiB
    with pytest.raises(ConfigError, match="max_response_bytes"):
        parse_config(chat_config("http://127.0.0.1:9/v1", max_response_bytes=100))


class Parts:
    """A ``StreamReader`` stand-in that hands out the given reads."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def readany(self) -> bytes:
        return self.parts.pop(0) if self.parts else b""


async def lines_of(parts: list[bytes], limit: int = 10) -> list[bytes]:
    return [line async for line in read_lines(Parts(parts), limit)]  # type: ignore[arg-type]


async def test_lines_are_split_across_reads_within_the_limit() -> None:
    assert await lines_of([b"ab\ncd", b"e", b"f\n\nxy"]) == [b"ab\n", b"cdef\n", b"\n", b"xy"]
    assert await lines_of([b"123456789\n"]) == [b"123456789\n"]  # exactly the limit, newline included
    with pytest.raises(LineTooLong):
        await lines_of([b"12345", b"6789", b"0\n"])
    with pytest.raises(LineTooLong):
        await lines_of([b"12345678901"])  # a line that never ends stops at the limit
