"""The embedded model stops working for a client that is gone, and an empty prompt is the client's mistake.

Before: a non-streaming request whose client left (or whose handler was cancelled by a routing
deadline) kept generating to the end, and so did a stream left before its first token: the model,
which serves one job at a time, was held for nobody for up to a minute. ``prompt: ""`` reached
llama.cpp's assert: a 500 retried three times and counted against the breaker, which opened for
every tenant after four. ``logprobs: false`` on chat answered ``{"content": [], ...}``, not null.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from opsgate.backends.embedded_llama import EmbeddedLlamaBackend
from opsgate.backends.llama_engine import DoneEvent, GenerationJob, TokenEvent
from opsgate.routing.deployment import DeploymentHandle
from tests.support import Gateway, start_gateway, wait_until

COUNTING = {"model": "smollm2", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,", "temperature": 0}
MESSAGES = [{"role": "user", "content": "Say hi."}]


def handle(gateway: Gateway) -> DeploymentHandle:
    return gateway.app.state.gateway.router.handles["smollm2"][0]  # type: ignore[no-any-return]


def backend(gateway: Gateway) -> EmbeddedLlamaBackend:
    found = handle(gateway).backend
    assert isinstance(found, EmbeddedLlamaBackend)
    return found


class Watch:
    """Wraps the backend's job runner: records each job's events and can hold the worker thread.

    ``hold(job, event)`` runs on the worker thread before the engine starts (event None) and before
    each event is passed on; it waits, at most ``patience`` seconds, for the job to be cancelled.
    """

    def __init__(self, gateway: Gateway, monkeypatch: pytest.MonkeyPatch, hold_at: Callable[[Any], bool]) -> None:
        self.events: list[Any] = []
        self.holding = threading.Event()
        self.job: GenerationJob | None = None
        target = backend(gateway)
        original = target._run

        def run(job: GenerationJob, emit: Callable[[Any], None]) -> None:
            self.job = job

            def watched(event: Any) -> None:
                self.events.append(event)
                self._hold(job, event, hold_at)
                emit(event)

            self._hold(job, None, hold_at)
            original(job, watched)

        monkeypatch.setattr(target, "_run", run)

    def _hold(self, job: GenerationJob, event: Any, hold_at: Callable[[Any], bool]) -> None:
        if hold_at(event) and not self.holding.is_set():
            self.holding.set()
            job.cancelled.wait(timeout=30)  # generous: with the fix it returns as soon as the client is gone

    def done(self) -> DoneEvent | None:
        return next((e for e in self.events if isinstance(e, DoneEvent)), None)


async def leave_when(watch: Watch, request: Any) -> None:
    """Send ``request``, hang up once the worker is held, and wait for the job's end."""
    task = asyncio.create_task(request)
    assert await asyncio.to_thread(wait_until, watch.holding.is_set, 120), "the job never started"
    task.cancel()  # the client hangs up: the connection closes
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(wait_until, lambda: watch.done() is not None, 120)


async def test_a_non_streaming_request_left_mid_generation_stops(
    embedded: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = Watch(embedded, monkeypatch, hold_at=lambda event: isinstance(event, TokenEvent))
    async with httpx.AsyncClient(timeout=300) as http:
        await leave_when(watch, http.post(embedded.url + "/v1/completions", json={**COUNTING, "max_tokens": 64}))
    done = watch.done()
    assert done is not None and done.finish_reason == "cancelled", done
    assert done.completion_tokens < 64
    assert wait_until(lambda: backend(embedded).queue.status()["running"] == 0, 60), "the model is free again"


async def test_a_stream_left_before_its_first_token_stops(embedded: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    # Held before the engine starts: the client is gone while the prompt would be evaluated.
    watch = Watch(embedded, monkeypatch, hold_at=lambda event: event is None)

    async def stream(http: httpx.AsyncClient) -> None:
        body = {**COUNTING, "max_tokens": 64, "stream": True}
        async with http.stream("POST", embedded.url + "/v1/completions", json=body) as response:
            async for _ in response.aiter_lines():
                pass

    async with httpx.AsyncClient(timeout=300) as http:
        await leave_when(watch, stream(http))
    done = watch.done()
    assert done is not None and done.finish_reason == "cancelled", done
    assert done.completion_tokens == 0
    assert wait_until(lambda: backend(embedded).queue.status()["running"] == 0, 60), "the model is free again"


@pytest.fixture(scope="module")
def short_deadline() -> Iterator[Gateway]:
    routing = {"deadline_seconds": 2, "retries": 0}
    gateway = start_gateway(
        {"models": [{"name": "smollm2", "routing": routing, "deployments": [{"type": "llama_cpp"}]}]}
    )
    yield gateway
    gateway.server.stop()


def test_a_request_past_its_routing_deadline_stops(short_deadline: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker is held at the first token until the job is cancelled: the deadline passes meanwhile.
    watch = Watch(short_deadline, monkeypatch, hold_at=lambda event: isinstance(event, TokenEvent))
    body = {**COUNTING, "max_tokens": 64}
    response = httpx.post(short_deadline.url + "/v1/completions", json=body, timeout=120)
    assert response.status_code == 504, response.text
    assert wait_until(lambda: watch.done() is not None, 120)
    done = watch.done()
    assert done is not None and done.finish_reason == "cancelled", done
    assert wait_until(lambda: backend(short_deadline).queue.status()["running"] == 0, 60), "the model is free again"


@pytest.mark.parametrize("prompt", ["", [""]])
def test_an_empty_prompt_is_a_400_and_no_model_failure(embedded: Gateway, prompt: Any) -> None:
    for _ in range(5):  # more than the breaker's failure threshold
        response = httpx.post(
            embedded.url + "/v1/completions", json={"model": "smollm2", "prompt": prompt, "max_tokens": 4}, timeout=120
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", "prompt")
    response = httpx.post(embedded.url + "/v1/completions", json={**COUNTING, "max_tokens": 2}, timeout=120)
    assert response.status_code == 200, response.text
    assert handle(embedded).breaker.status()["state"] == "closed"


@pytest.mark.parametrize(("logprobs", "expect_null"), [(False, True), (None, True), (True, False)])
def test_chat_logprobs_false_answers_null(embedded: Gateway, logprobs: bool | None, expect_null: bool) -> None:
    body: dict[str, Any] = {"model": "smollm2", "messages": MESSAGES, "max_tokens": 2, "temperature": 0}
    if logprobs is not None:
        body["logprobs"] = logprobs
    response = httpx.post(embedded.url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert (response.json()["choices"][0]["logprobs"] is None) == expect_null


def test_completions_logprobs_zero_still_answers_logprobs(embedded: Gateway) -> None:
    response = httpx.post(
        embedded.url + "/v1/completions", json={**COUNTING, "max_tokens": 2, "logprobs": 0}, timeout=120
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["logprobs"] is not None
