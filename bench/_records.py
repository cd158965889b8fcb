"""Synthetic request records for the request-log benchmarks: realistic sizes, a known word mix."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import orjson

# A vocabulary with a planted frequency ladder, so searches of known selectivity exist:
# "refund" in ~1% of records, "chargeback" in ~0.1%, "zeppelin" in ~0.01%, "東京" in ~0.5%.
_WORDS = [f"w{n:04d}" for n in range(3000)] + ["order", "account", "price", "shipping", "please", "thanks"]
_PLANTED = [("refund", 0.01), ("chargeback", 0.001), ("zeppelin", 0.0001), ("東京", 0.005)]
MODELS = ["gpt-4o-mini", "smollm2", "llama-3.1-8b", "claude-haiku"]


def sentence(rng: random.Random, words: int) -> str:
    """A sentence of ``words`` words, with the planted words at their frequencies."""
    out = [rng.choice(_WORDS) for _ in range(words)]
    for word, share in _PLANTED:
        if rng.random() < share:
            out[rng.randrange(len(out))] = word
    return " ".join(out)


def make_record(rng: random.Random, ts: float) -> dict[str, Any]:
    """One journaled record as the gateway writes it (payloads as JSON text)."""
    prompt = sentence(rng, 30)
    answer = sentence(rng, 40)
    model = rng.choice(MODELS)
    status = 200 if rng.random() > 0.02 else rng.choice([400, 404, 429, 502, 504])
    return {
        "id": uuid.uuid4().hex,
        "ts": ts,
        "tenant": f"t{rng.randrange(20)}",
        "user_id": f"u{rng.randrange(5000)}",
        "endpoint": "chat",
        "model": model,
        "deployment": f"{model}#0",
        "status": status,
        "stream": rng.random() < 0.5,
        "prompt_tokens": rng.randrange(20, 400),
        "completion_tokens": rng.randrange(1, 300),
        "latency_ms": rng.uniform(50, 4000),
        "ttft_ms": rng.uniform(20, 500),
        "cost": rng.uniform(0, 0.01),
        "finish_reason": "stop",
        "input_text": prompt,
        "output_text": answer,
        "request": orjson.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": 256}).decode(),
        "response": orjson.dumps({"content": answer, "finish_reason": "stop"}).decode(),
        "tags": {"env": "prod"},
        "metadata": None,
    }


def spread_records(rng: random.Random, count: int, days: float) -> list[dict[str, Any]]:
    """``count`` records spread evenly over the last ``days`` days."""
    now = time.time()
    return [make_record(rng, now - days * 86400 * (1 - i / count)) for i in range(count)]
