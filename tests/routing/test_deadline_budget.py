"""The deadline is budgeted across the fallback chain, and a started stream must end by it too.

Before: each attempt ran under the whole remaining deadline, so with default timeouts a hung
primary (no response header for 60 s, three attempts) used it all and the fallback never got its
turn; a stream, once started, ran until the upstream's total timeout (600 s).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

DEADLINE = 6.0


def alias(name: str, server: FakeUpstream, **routing: Any) -> dict[str, Any]:
    """An alias with default timeouts and retries (the configuration the issue was found with)."""
    return {
        "name": name,
        "routing": {"deadline_seconds": DEADLINE, **routing},
        "deployments": [{"type": "openai", "base_url": server.base_url, "model": "m"}],
    }


@pytest.fixture()
def gateway(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Iterator[Gateway]:
    primary, backup = upstreams
    gw = start_gateway({"models": [alias("svc", primary, fallbacks=["backup"]), alias("backup", backup)]})
    yield gw
    gw.server.stop()


def test_a_hung_primary_leaves_the_fallback_its_turn(
    gateway: Gateway, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    primary, backup = upstreams
    primary.script = Script(mode="hang")
    started = time.monotonic()
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "svc", "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.headers["x-opsgate-model"] == "backup"
    assert len(primary.requests) >= 1 and len(backup.requests) == 1
    assert elapsed < DEADLINE + 2, f"took {elapsed:.1f}s against a {DEADLINE}s deadline"
    [record] = gateway.records_for(response.headers["x-request-id"])
    assert record["tags"]["fallback_from"] == "svc"


def test_a_stream_ends_at_the_deadline(gateway: Gateway, upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    primary, _ = upstreams
    primary.script = Script(words=200_000)  # ~1 ms a word: minutes of streaming without the bound
    started = time.monotonic()
    events: list[str] = []
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={"model": "svc", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + 3, f"the stream ran {elapsed:.1f}s against a {DEADLINE}s deadline"
    assert events[-1] != "data: [DONE]"  # cut off: an error event, never a silent success
    error = json.loads(events[-1].removeprefix("data:"))["error"]
    assert "deadline" in error["message"]


def test_waiting_for_a_busy_primary_also_stays_in_its_share(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    primary, backup = upstreams
    limited = alias("svc", primary, fallbacks=["backup"])
    limited["deployments"][0]["limits"] = {"max_in_flight": 1, "queue_timeout": 60}
    gateway = start_gateway({"models": [limited, alias("backup", backup)]})
    try:
        primary.script = Script(words=200_000)  # a long stream holds the primary's only slot
        chat = {"model": "svc", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json={**chat, "stream": True}, timeout=60):
            started = time.monotonic()
            response = httpx.post(gateway.url + "/v1/chat/completions", json=chat, timeout=60)
            elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert response.headers["x-opsgate-model"] == "backup"
        assert elapsed < DEADLINE / 2 + 2, f"waited {elapsed:.1f}s for a slot the stream held"
    finally:
        gateway.server.stop()
