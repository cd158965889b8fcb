"""Knowledge-limit detection on the real embedded model: confidence from the logprobs it really produces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support import Gateway, start_gateway

CONFIG = {
    "models": [{"name": "smollm2", "deployments": [{"type": "llama_cpp", "n_threads": 1, "n_ctx": 1024}]}],
    "guard": {
        "enabled": True,
        "policies": [
            {
                "name": "flag-everything",
                "models": ["smollm2"],
                "input": [],
                # threshold 0: every answer counts as low-confidence, so the warning path is exercised.
                "output": [{"scanner": "confidence", "action": "warn", "threshold": 0.0, "min_tokens": 1}],
            }
        ],
    },
}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    gateway = start_gateway(CONFIG)
    yield gateway
    gateway.server.stop()


@pytest.fixture()
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=120)


def confidence_entry(gateway: Gateway, request_id: str) -> dict[str, Any]:
    [record] = gateway.records_for(request_id, timeout=30)
    [entry] = record["tags"]["guard"]["output"]
    assert entry["scanner"] == "confidence"
    return dict(entry)


def test_confidence_from_real_logprobs_warns_and_strips_them(client: openai.OpenAI, gateway: Gateway) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=QUESTION, max_tokens=12, temperature=0, extra_headers={"x-request-id": "conf-json"}
    )
    answer = raw.parse()
    assert answer.choices[0].message.content
    assert answer.choices[0].logprobs is None  # the gateway asked for them; the client did not
    assert raw.headers["x-opsgate-guard-warn"] == "confidence"
    entry = confidence_entry(gateway, "conf-json")
    details = entry["details"]
    assert (
        details["tokens"] >= 1 and details["mean_logprob"] <= 0.0 and details["min_logprob"] <= details["mean_logprob"]
    )
    assert details["mean_entropy"] >= 0.0  # from the top-5 alternatives the gateway asked for
    assert 0.0 <= entry["score"] < 1.0 and entry["verdict"] == "fail"


def test_a_client_that_asked_for_logprobs_keeps_them(client: openai.OpenAI, gateway: Gateway) -> None:
    answer = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        extra_headers={"x-request-id": "conf-own-logprobs"},
    )
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert all(entry.top_logprobs == [] for entry in logprobs.content)  # top-5 was the gateway's, not asked for
    assert confidence_entry(gateway, "conf-own-logprobs")["details"]["tokens"] == len(logprobs.content)


def test_streamed_answer_is_judged_at_its_end(client: openai.OpenAI, gateway: Gateway) -> None:
    stream = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
        stream=True,
        extra_headers={"x-request-id": "conf-stream"},
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    assert all(c.choices[0].logprobs is None for c in chunks)
    details = confidence_entry(gateway, "conf-stream")["details"]
    assert details["tokens"] >= 1 and "mean_entropy" in details
