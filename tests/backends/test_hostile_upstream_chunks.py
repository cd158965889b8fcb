"""Ill-typed chunks from an upstream stream, over real HTTP: the upstream's bad answer, not our bug.

``data: 5``, ``choices: "abc"``, a delta that is a string, content that is a number: each was a 500
``server_error`` quoting a Python AttributeError (and a non-string content cut the record to its
essentials, usage and cost lost). Now: 502 ``upstream_bad_response`` in the OpenAI shape (an error
event once the stream has started) and a whole record.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends.hostile_upstream import (
    HEAD,
    HostileUpstream,
    assert_bad_response,
    chat,
    delta_event,
    ending,
    event,
    events,
    gateway_for,
    hostile_server,
    record_of,
)
from tests.support import Gateway


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    yield from hostile_server()


@pytest.fixture()
def gateway(hostile: HostileUpstream) -> Iterator[Gateway]:
    gateway = gateway_for(hostile)
    yield gateway
    gateway.server.stop()


ILL_TYPED = {
    "a number": b"data: 5\n\n",
    "a list": b"data: [1, 2]\n\n",
    "null": b"data: null\n\n",
    "choices a string": event({**HEAD, "choices": "abc"}),
    "a choice a number": event({**HEAD, "choices": [1]}),
    "delta a string": event({**HEAD, "choices": [{"index": 0, "delta": "x"}]}),
    "content a number": delta_event({"content": 5}),
    "content an object": delta_event({"content": {}}),
    "content a list": delta_event({"content": ["a"]}),
}


@pytest.mark.parametrize("bad", list(ILL_TYPED.values()), ids=list(ILL_TYPED))
def test_an_ill_typed_chunk_mid_stream_is_a_502_and_a_whole_record(
    gateway: Gateway, hostile: HostileUpstream, bad: bytes
) -> None:
    hostile.stream = [delta_event({"role": "assistant", "content": "start "}), bad, *ending()]
    response = chat(gateway, "ill-typed")
    got = events(response)
    assert "[DONE]" not in got
    assert_bad_response(got[-1]["error"])
    record = record_of(gateway, "ill-typed")
    assert record["status"] == 502 and record["error_type"] == "upstream_error"
    assert "record_error" not in (record["tags"] or {})  # the whole record, not its essentials
    assert record["output_text"] == "start " and "cost" in record and "ttft_ms" in record


@pytest.mark.parametrize("bad", [ILL_TYPED["a number"], ILL_TYPED["content a number"]], ids=["number", "content"])
def test_an_ill_typed_first_chunk_is_a_502_answer(gateway: Gateway, hostile: HostileUpstream, bad: bytes) -> None:
    hostile.stream = [bad, *ending()]
    response = chat(gateway, "ill-typed-first")
    assert response.status_code == 502
    assert_bad_response(response.json()["error"])
    assert record_of(gateway, "ill-typed-first")["status"] == 502
