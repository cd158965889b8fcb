"""Concurrent requests to the embedded model: all complete, queue in order, overflow gets 503, never hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import Gateway, start_gateway

STORY = [{"role": "user", "content": "Tell me a story about a lighthouse keeper."}]


async def stream_text(client: openai.AsyncOpenAI, max_tokens: int) -> tuple[str, int]:
    stream = await client.chat.completions.create(
        model="smollm2",
        messages=STORY,
        max_tokens=max_tokens,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    text, tokens = "", 0
    async for chunk in stream:
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            text += choice.delta.content or ""
    return text, tokens


async def test_four_concurrent_streams_all_complete(embedded: Gateway) -> None:
    client = openai.AsyncOpenAI(base_url=embedded.base_url, api_key="unused", max_retries=0)
    results = await asyncio.gather(*(stream_text(client, 24) for _ in range(4)))
    await client.close()
    for text, tokens in results:
        assert text.strip(), "a concurrent stream came back empty"
        assert 0 < tokens <= 24


async def test_server_stays_responsive_while_model_works(embedded: Gateway) -> None:
    client = openai.AsyncOpenAI(base_url=embedded.base_url, api_key="unused", max_retries=0)
    work = asyncio.create_task(stream_text(client, 120))
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient() as http:
        started = time.perf_counter()
        response = await http.get(embedded.url + "/healthz")
        health_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    assert not work.done(), "generation finished too fast to show anything"
    assert health_ms < 200, f"/healthz took {health_ms:.0f} ms while the model was generating"
    await work
    await client.close()


@pytest.fixture(scope="module")
def tiny_queue() -> Iterator[Gateway]:
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "smollm2",
                    "deployments": [{"type": "llama_cpp", "max_queue": 1, "queue_timeout": 30}],
                }
            ]
        }
    )
    yield gateway
    gateway.server.stop()


async def test_overflow_gets_503_with_retry_after(tiny_queue: Gateway) -> None:
    body = {"model": "smollm2", "messages": STORY, "max_tokens": 40}
    async with httpx.AsyncClient(timeout=60) as http:
        responses = await asyncio.gather(
            *(http.post(tiny_queue.url + "/v1/chat/completions", json=body) for _ in range(5))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 2, statuses  # one running, one waiting
    assert statuses.count(503) == 3, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "overloaded"
        else:
            assert response.json()["choices"][0]["message"]["content"]


async def test_waiting_too_long_gets_503_not_a_hang() -> None:
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "smollm2",
                    "deployments": [{"type": "llama_cpp", "max_queue": 4, "queue_timeout": 0.3}],
                }
            ]
        }
    )
    try:
        body = {"model": "smollm2", "messages": STORY, "max_tokens": 60}
        async with httpx.AsyncClient(timeout=60) as http:
            started = time.perf_counter()
            responses = await asyncio.gather(
                *(http.post(gateway.url + "/v1/chat/completions", json=body) for _ in range(3))
            )
            elapsed = time.perf_counter() - started
        statuses = sorted(r.status_code for r in responses)
        assert statuses[0] == 200 and 503 in statuses, statuses
        assert elapsed < 30
    finally:
        gateway.server.stop()


async def test_disconnect_cancels_generation(embedded: Gateway) -> None:
    body = {
        "model": "smollm2",
        "messages": STORY,
        "max_tokens": 1500,
        "stream": True,
        "temperature": 1.0,
        "seed": 1,
    }
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream(
            "POST", embedded.url + "/v1/chat/completions", json=body, headers={"x-request-id": "disconnect-1"}
        ) as response:
            received = 0
            async for _ in response.aiter_lines():
                received += 1
                if received > 6:
                    break
        # If generation went on, this request would wait behind up to 1500 tokens.
        started = time.perf_counter()
        quick = await http.post(
            embedded.url + "/v1/chat/completions",
            json={"model": "smollm2", "messages": STORY, "max_tokens": 4},
        )
        waited = time.perf_counter() - started
    assert quick.status_code == 200
    assert waited < 5, f"the next request waited {waited:.1f}s: the abandoned generation was not cancelled"
    [record] = embedded.records_for("disconnect-1")
    assert record["status"] == 499 and record["error_type"] == "client_disconnected"
