"""A misbehaving upstream's stream, over real HTTP: events past aiohttp's 512 KiB line limit.

What the client and the record see is the upstream's fault, reported as such: 502
``upstream_bad_response`` in the OpenAI error shape (an error event once the stream has started),
never a 500 with Python's or aiohttp's words, and the record is whole (not cut to its essentials).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.backends.hostile_upstream import (
    HostileUpstream,
    assert_bad_response,
    chat,
    delta_event,
    ending,
    events,
    gateway_for,
    hostile_server,
    record_of,
    whole_stream,
)
from tests.support import Gateway

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    yield from hostile_server()


@pytest.fixture()
def gateway(hostile: HostileUpstream) -> Iterator[Gateway]:
    gateway = gateway_for(hostile)
    yield gateway
    gateway.server.stop()


def assert_breaker_closed(gateway: Gateway, hostile: HostileUpstream) -> None:
    """An ordinary request (another tenant's, say) is still served by the deployment."""
    hostile.stream = whole_stream(delta_event({"content": "fine"}))
    response = chat(gateway, "after")
    assert response.status_code == 200, response.text
    assert events(response)[-1] == "[DONE]"


# -- F5: events past aiohttp's 512 KiB line limit ------------------------------------------------


def test_an_event_of_several_mib_is_relayed_whole(gateway: Gateway, hostile: HostileUpstream) -> None:
    # A whole tool call's arguments (or a whole answer) in one event: legitimate, and was a 500.
    arguments = json.dumps({"rows": ["x" * 1000] * 3000})  # ~3 MB
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "save", "arguments": arguments}}
    text = "y" * (2 * MiB)
    hostile.stream = [delta_event({"role": "assistant", "content": text}), delta_event({"tool_calls": [call]})]
    hostile.stream += ending()
    response = chat(gateway, "big-event")
    assert response.status_code == 200
    got = events(response)
    assert got[-1] == "[DONE]"
    assert got[0]["choices"][0]["delta"]["content"] == text
    assert got[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == arguments
    record = record_of(gateway, "big-event")
    assert record["status"] == 200 and record["output_text"] == text


def test_a_first_event_over_the_limit_is_a_502_that_spares_the_breaker(
    gateway: Gateway, hostile: HostileUpstream
) -> None:
    # Over max_event_bytes (16 MiB by default). A client may have asked for an answer this long,
    # so it must not open the breaker every tenant shares (2 consecutive failures would).
    hostile.stream = [delta_event({"role": "assistant", "content": "z" * (17 * MiB)}), *ending()]
    before = hostile.requests
    for attempt in range(3):
        response = chat(gateway, f"huge-first-{attempt}")
        assert response.status_code == 502, response.text[:300]
        assert_bad_response(response.json()["error"])
        record = record_of(gateway, f"huge-first-{attempt}")
        assert record["status"] == 502 and record["error_type"] == "upstream_error"
        assert record["tags"]["answer_too_large"] == {"limit": "max_event_bytes", "bytes": 16 * MiB}
    assert hostile.requests - before == 3  # answered at once: no other deployment made to write it again
    assert_breaker_closed(gateway, hostile)


def test_a_later_event_over_the_limit_ends_the_stream_with_a_502_event(hostile: HostileUpstream) -> None:
    gateway = gateway_for(hostile, max_event_bytes=256 * 1024)
    try:
        hostile.stream = whole_stream(delta_event({"content": "z" * 300_000}))
        response = chat(gateway, "huge-later")
        assert response.status_code == 200  # already started
        got = events(response)
        assert "[DONE]" not in got
        assert_bad_response(got[-1]["error"])
        record = record_of(gateway, "huge-later")
        assert record["status"] == 502 and record["output_text"] == "start "  # what passed before it
        assert record["tags"]["answer_too_large"]["limit"] == "max_event_bytes"
    finally:
        gateway.server.stop()
