"""Drift against the real embedded model (SmolLM2 on llama.cpp): English prompts, more English
prompts, then German ones, through the gateway with the official openai SDK. The English halves do
not drift against each other; the German window does, and the check names the language that moved."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from opsgate.domain.config import load_config
from opsgate.domain.drift_config import DriftConfig
from tests.drift.traffic import prompt
from tests.support import Gateway, wait_until

N = 36  # requests per window


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    drift = DriftConfig.model_validate(
        {
            "enabled": True,
            "bucket": "1s",
            "interval": "1h",  # checks are asked for through the API here
            "flush_interval": 0.2,
            "language_sample_rate": 1.0,
            "max_embeddings_per_second": 1000,
            "reservoir": 32,
            "min_samples": {"requests": 30, "answers": 20, "embeddings": 15},
        }
    )
    served = Gateway(load_config(None).model_copy(update={"drift": drift}))
    served.server.start("/readyz", timeout=180)
    yield served
    served.server.stop()


def send(client: OpenAI, rng: random.Random, language: str) -> tuple[int, int]:
    """N prompts in ``language``; the whole-second bucket span they fall in."""
    start = math.floor(time.time())
    for _ in range(N):
        reply = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": prompt(rng, "cooking", language)}],
            max_tokens=8,
            temperature=0,
        )
        assert reply.choices[0].message.content is not None
    end = math.floor(time.time()) + 1
    time.sleep(max(0.0, end - time.time()) + 0.05)  # the next window starts in a fresh bucket
    return start, end


def collector(gateway: Gateway) -> dict[str, Any]:
    return dict(httpx.get(gateway.url + "/admin/drift/status", timeout=30).json()["monitor"]["collector"])


def check(gateway: Gateway, reference: tuple[int, int], current: tuple[int, int]) -> dict[str, Any]:
    body = {
        "alias": "smollm2",
        "reference": {"start": reference[0], "end": reference[1]},
        "current": {"start": current[0], "end": current[1]},
    }
    response = httpx.post(gateway.url + "/admin/drift/check", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_embedded_model_drifts_on_language_not_on_more_of_the_same(gateway: Gateway) -> None:
    client = OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=120)
    rng = random.Random(7)
    english, more_english, german = send(client, rng, "en"), send(client, rng, "en"), send(client, rng, "de")
    assert wait_until(lambda: collector(gateway)["summarised"] >= 3 * N, 120), collector(gateway)

    def embedded() -> bool:
        status = collector(gateway)
        return bool(status["embedded"] + status["embed_dropped"] == status["sampled"])

    assert wait_until(embedded, 300), collector(gateway)

    same = check(gateway, english, more_english)
    assert same["reference"]["requests"] == N and same["current"]["requests"] == N, same
    assert not same["insufficient"] and not same["drifted"], [
        (t["feature"], t["p_adjusted"], t["effect"]) for t in same["tests"] if t["drifted"]
    ]
    shifted = check(gateway, english, german)
    assert shifted["drifted"], shifted
    moved = {t["feature"]: t for t in shifted["tests"] if t["drifted"]}
    assert moved["prompt_language"]["summary"].startswith("share of 'de' prompts"), moved
