"""The embedded models: what a client sends wrong is a 400 before generation, never a model failure.

Before: a ``json_schema`` llama.cpp cannot compile raised inside the engine and counted against the
breaker (two such requests put ``smollm2`` into 503 for everyone), and an abandoned embeddings
request kept the model busy until it was done while every other embedding call waited.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from opsgate.routing.deployment import DeploymentHandle
from tests.support import Gateway, start_gateway, wait_until

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Give me a number."}]


def handle(gateway: Gateway, alias: str) -> DeploymentHandle:
    """The deployment as the router sees it (breaker, counters, backend)."""
    return gateway.app.state.gateway.router.handles[alias][0]  # type: ignore[no-any-return]


def schema_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


BAD_SCHEMAS = [
    {"$ref": "#"},
    {"$ref": "#/"},
    {"$ref": "https://evil.example/schema.json"},
    {"type": "string", "pattern": "(("},
    {"type": "string", "pattern": "^(?=a)b$"},
    {"type": "string", "pattern": "^(a|b)*c\\d\\w$"},  # converts, but llama.cpp's parser refuses it
    {"type": "string", "pattern": "^a{1,5000}$"},
    {"type": "string", "minLength": 10_000_000},
    {"type": "wat"},
    [1, 2],
    "object",
    nested(70),
]


@pytest.mark.parametrize("schema", BAD_SCHEMAS, ids=range(len(BAD_SCHEMAS)))
def test_an_unusable_schema_is_a_400_naming_response_format(embedded: Gateway, schema: Any) -> None:
    body = {"model": "smollm2", "messages": MESSAGES, "response_format": schema_format(schema), "max_tokens": 8}
    response = httpx.post(embedded.url + CHAT, json=body, timeout=120)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith("response_format")


def test_bad_requests_leave_the_breaker_closed_and_the_model_serving(embedded: Gateway) -> None:
    state = handle(embedded, "smollm2")
    failures = state.failures
    bad: list[dict[str, Any]] = [
        {"response_format": schema_format(schema)} for schema in BAD_SCHEMAS[:6] + BAD_SCHEMAS[9:]
    ]
    bad += [
        {"seed": 2**64},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
        {"tool_choice": "required"},
    ]
    for extra in bad:
        response = httpx.post(
            embedded.url + CHAT, json={"model": "smollm2", "messages": MESSAGES, **extra}, timeout=120
        )
        assert response.status_code == 400, (extra, response.text)
    assert state.breaker.status()["state"] == "closed"
    assert state.failures == failures
    good = {
        "model": "smollm2",
        "messages": MESSAGES,
        "max_tokens": 12,
        "seed": 2**63 - 1,  # any 64-bit seed is served (llama.cpp's are 32-bit)
        "response_format": schema_format({"type": "object", "properties": {"n": {"type": "integer"}}}),
    }
    response = httpx.post(embedded.url + CHAT, json=good, timeout=120)
    assert response.status_code == 200, response.text


def test_tools_are_refused_by_name(embedded: Gateway) -> None:
    body = {"model": "smollm2", "messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]}
    response = httpx.post(embedded.url + CHAT, json=body, timeout=120)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tools"


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        (CHAT, {"logit_bias": {"50256": -100}}, "logit_bias"),
        (CHAT, {"best_of": 3}, "best_of"),
        ("/v1/completions", {"best_of": 5}, "best_of"),
    ],
)
def test_parameters_the_model_would_ignore_are_refused_by_name(
    embedded: Gateway, path: str, extra: dict[str, Any], param: str
) -> None:
    # They were accepted and silently dropped (probe-f #10): the client believed them applied.
    body = {"model": "smollm2", "max_tokens": 4, **extra}
    body |= {"messages": MESSAGES} if path == CHAT else {"prompt": "Hello"}
    response = httpx.post(embedded.url + path, json=body, timeout=120)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_more_inputs_than_max_batch_is_a_400_naming_input(embedded: Gateway) -> None:
    response = httpx.post(
        embedded.url + "/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["x"] * 65}, timeout=60
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input" and error["code"] == "too_many_inputs"


@pytest.fixture(scope="module")
def embedder() -> Iterator[Gateway]:
    """An embedding model that accepts OpenAI's largest batch, so one request is minutes of work."""
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "emb",
                    "kind": "embedding",
                    "deployments": [{"type": "sentence_embedding", "max_batch": 2048, "queue_timeout": 300}],
                },
                {
                    "name": "emb-short",
                    "kind": "embedding",
                    "routing": {"deadline_seconds": 3, "retries": 0},
                    "deployments": [{"type": "sentence_embedding", "max_batch": 2048}],
                },
            ]
        }
    )
    for name in ("emb", "emb-short"):
        assert wait_until(handle(gateway, name).backend.is_ready, timeout=120)
    yield gateway
    gateway.server.stop()


def big_request(model: str) -> dict[str, Any]:
    """2048 inputs of 256 tokens each: minutes of work for the numpy encoder."""
    return {"model": model, "input": [f"{n} " + "many words of text " * 80 for n in range(2048)]}


def test_an_abandoned_embedding_request_frees_the_model(embedder: Gateway) -> None:
    url = embedder.url + "/v1/embeddings"
    big = big_request("emb")

    def abandon() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json=big, timeout=httpx.Timeout(60, read=4))

    queue = handle(embedder, "emb").backend.queue  # type: ignore[attr-defined]
    with ThreadPoolExecutor(1) as pool:
        gone = pool.submit(abandon)
        assert wait_until(lambda: queue.running == 1, timeout=30), "the big request never reached the model"
        started = time.monotonic()
        small = httpx.post(url, json={"model": "emb", "input": "a small request"}, timeout=120)
        waited = time.monotonic() - started
        gone.result()
    assert small.status_code == 200, small.text
    assert len(small.json()["data"][0]["embedding"]) == 384
    # The big request left after ~4 s; the model stops within one pass, not after minutes of work.
    assert waited < 40, f"the small request waited {waited:.1f}s behind an abandoned one"
    assert wait_until(lambda: queue.running == 0, timeout=10)


def test_an_embedding_request_past_its_deadline_stops_the_model(embedder: Gateway) -> None:
    url = embedder.url + "/v1/embeddings"
    queue = handle(embedder, "emb-short").backend.queue  # type: ignore[attr-defined]
    started = time.monotonic()
    response = httpx.post(url, json=big_request("emb-short"), timeout=120)
    assert response.status_code == 504, response.text
    assert time.monotonic() - started < 3 + 5
    # Before, the model computed on for minutes while every other call waited; now it stops in one pass.
    assert wait_until(lambda: queue.running == 0, timeout=20), "the model is still busy with the timed-out request"
    small = httpx.post(url, json={"model": "emb-short", "input": "a small request"}, timeout=60)
    assert small.status_code == 200, small.text
