"""Output scans off the event loop, within the policy's time budget (probe-guard finding 2).

Over real HTTP: a gateway on loopback in front of the text upstream, a deliberately slow output
scanner put into a policy. While it scans, a small request on another connection is answered at
once; past the budget, ``on_timeout`` withholds the answer (422 ``output_blocked``, scanner
``time_budget``; in a stream, the error event) or lets it pass with a warning, and the record says
``timed_out``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.domain.guard_config import BannedTermsScannerConfig
from opsgate.guard.base import ScanContext, ScanResult
from opsgate.guard.engine import Entry
from opsgate.pipeline.guard import GuardStage
from tests.guard.conftest import TextUpstream, guarded_config
from tests.support import Gateway, start_gateway

LONG = ("The weather was mild and the meeting went well; nothing more to report here. " * 80)[:6_000]
SLOW_S = 2.0


class SlowScanner:
    """Sleeps (holding its thread, as a CPU-bound scan would) on any text over 4 KB."""

    name = "slow"

    def __init__(self, scope: str = "window") -> None:
        self.stream_scope = scope
        self.busy = threading.Event()

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        if len(text) > 4096:
            self.busy.set()
            time.sleep(SLOW_S)
        return ScanResult.clean(text)


def _policy(name: str, model: str, budget_ms: float, on_timeout: str) -> dict[str, Any]:
    return {
        "name": name,
        "models": [model],
        "time_budget_ms": budget_ms,
        "on_timeout": on_timeout,
        "input": [],
        "output": [{"scanner": "pii", "action": "redact"}],
    }


GUARD = {
    "stream_window_chars": 160,
    "policies": [
        _policy("roomy", "up", 10_000, "block"),
        _policy("tight-block", "up-strict", 300, "block"),
        _policy("tight-warn", "up-warn", 300, "warn"),
    ],
}


@pytest.fixture(scope="module")
def gateway(text_upstream_server: TextUpstream) -> Iterator[Gateway]:
    config = guarded_config(text_upstream_server.base_url, GUARD)
    config["models"].append({**config["models"][0], "name": "up-warn"})
    gateway = start_gateway(config)
    [stage] = [s for s in gateway.app.state.gateway.pipeline.stages if isinstance(s, GuardStage)]
    config_entry = BannedTermsScannerConfig(scanner="banned_terms", action="log", terms=["zzzz"])
    for policy in stage.engine.policies:
        # Whole scope: in a stream it reads all text so far, so it gets past 4 KB as the stream goes on.
        policy.output.append(Entry(SlowScanner("whole"), config_entry))
    yield gateway
    gateway.server.stop()


def _chat(model: str, request_id: str, stream: bool = False) -> dict[str, Any]:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "Tell me about the day."}]}
    return {"url": "/v1/chat/completions", "json": body, "headers": {"x-request-id": request_id}}


def _guard_tags(gateway: Gateway, request_id: str) -> dict[str, Any]:
    [record] = gateway.records_for(request_id, timeout=15)
    tags: dict[str, Any] = record["tags"]["guard"]
    return tags


async def test_a_slow_output_scan_does_not_hold_up_other_requests(
    gateway: Gateway, text_upstream: TextUpstream
) -> None:
    text_upstream.script.content = LONG
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:

        async def ping() -> float:
            started = time.perf_counter()
            response = await client.get("/v1/models")
            assert response.status_code == 200
            return time.perf_counter() - started

        quiet = [await ping() for _ in range(10)]
        slow = asyncio.create_task(client.post(**_chat("up", "slow-json")))
        loaded: list[float] = []
        while not slow.done():
            loaded.append(await ping())
        response = await slow
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == LONG
    # The slow scan held its thread SLOW_S; on the event loop it held every request that long.
    assert len(loaded) >= 3
    assert max(loaded) < statistics.median(quiet) + SLOW_S / 2, (quiet, loaded)
    assert "timed_out" not in _guard_tags(gateway, "slow-json")


def test_past_the_budget_a_blocking_policy_withholds_the_answer(gateway: Gateway, text_upstream: TextUpstream) -> None:
    text_upstream.script.content = LONG
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        started = time.perf_counter()
        response = client.post(**_chat("up-strict", "out-budget-block"))
        took = time.perf_counter() - started
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "output_blocked" and "time_budget" in error["message"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert took < SLOW_S, took  # answered at the budget, not when the scan gave up
    tags = _guard_tags(gateway, "out-budget-block")
    assert tags["timed_out"] is True
    entry = next(e for e in tags["output"] if e["scanner"] == "time_budget")
    assert entry["action"] == "block" and entry["details"]["timed_out"] is True


def test_past_the_budget_a_blocking_policy_ends_a_stream_with_the_error_event(
    gateway: Gateway, text_upstream: TextUpstream
) -> None:
    text_upstream.script.content = LONG
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        response = client.post(**_chat("up-strict", "out-budget-stream", stream=True))
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert events and events[-1] != "[DONE]"
    last = json.loads(events[-1])
    assert last["error"]["code"] == "output_blocked" and "time_budget" in last["error"]["message"]
    streamed = "".join(
        (json.loads(e)["choices"][0].get("delta") or {}).get("content") or ""
        for e in events[:-1]
        if json.loads(e).get("choices")
    )
    assert len(streamed) < len(LONG)  # the windows after the budget never left
    tags = _guard_tags(gateway, "out-budget-stream")
    assert tags["timed_out"] is True
    assert any(e["scanner"] == "time_budget" for e in tags["output"])


def test_past_the_budget_a_warning_policy_passes_the_answer_with_a_warning(
    gateway: Gateway, text_upstream: TextUpstream
) -> None:
    text_upstream.script.content = LONG
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        response = client.post(**_chat("up-warn", "out-budget-warn"))
    assert response.status_code == 200, response.text
    assert "time_budget" in response.headers["x-opsgate-guard-warn"]
    assert _guard_tags(gateway, "out-budget-warn")["timed_out"] is True
