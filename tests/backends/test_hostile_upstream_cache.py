"""With the response cache on, a stream it cannot assemble is relayed untouched and left unstored.

Tool-call deltas of odd shapes (``arguments`` an object, ``index`` a list…) pass with the cache
off; with it on they were a 500 mid-stream: the client lost its answer because the cache could
not store it. The same stream must now reach the client the same way, both times a miss.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from opsgate.cache.streams import StreamAssembler
from tests.backends.hostile_upstream import (
    HostileUpstream,
    chat,
    delta_event,
    events,
    gateway_for,
    hostile_server,
    record_of,
    whole_stream,
)


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    yield from hostile_server()


ODD_TOOL_CALLS = {
    "arguments an object": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": {"city": "Paris"}}}],
    "index a list": [{"index": [0], "id": "c1", "function": {"name": "f", "arguments": "{}"}}],
    "function a string": [{"index": 0, "function": "x"}],
    "call a string": ["x"],
}


@pytest.mark.parametrize("calls", list(ODD_TOOL_CALLS.values()), ids=list(ODD_TOOL_CALLS))
def test_the_cache_relays_what_it_cannot_store(hostile: HostileUpstream, calls: list[Any]) -> None:
    stream = whole_stream(delta_event({"tool_calls": calls}))
    hostile.stream = stream
    plain = gateway_for(hostile)
    try:
        uncached = events(chat(plain, "no-cache"))
    finally:
        plain.server.stop()
    cached = gateway_for(hostile, cache=True)
    try:
        for attempt in range(2):
            response = chat(cached, f"cache-{attempt}")
            assert response.status_code == 200
            assert response.headers["x-opsgate-cache"] == "miss"  # never stored: the second is a miss too
            got = events(response)
            assert got[-1] == "[DONE]"
            assert [e["choices"] for e in got[:-1]] == [e["choices"] for e in uncached[:-1]]
            assert record_of(cached, f"cache-{attempt}")["status"] == 200
    finally:
        cached.server.stop()


@pytest.mark.parametrize("calls", list(ODD_TOOL_CALLS.values()), ids=list(ODD_TOOL_CALLS))
def test_the_assembler_marks_an_odd_delta_unstorable_and_keeps_going(calls: list[Any]) -> None:
    head = {"id": "c", "created": 1, "model": "m"}
    assembler = StreamAssembler("chat")
    assembler.add({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}}]})
    assert assembler.storable
    assembler.add({**head, "choices": [{"index": 0, "delta": {"tool_calls": calls}}]})
    assert not assembler.storable
    assembler.add({**head, "choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}]})
    assert not assembler.storable and not assembler.choices  # nothing held for a stream never stored
