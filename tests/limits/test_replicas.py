"""Two gateway processes sharing one Redis hold one budget between them."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis
import yaml

from tests.fake_upstream import FakeUpstream, Script
from tests.limits.support import REDIS_URL, spend_until_refused
from tests.support import serve_process


@contextmanager
def gateway_process(config: Path, log: Path) -> Iterator[str]:
    """``opsgate serve`` in a subprocess; yields its URL once /healthz answers."""
    with serve_process(config, log) as (_, url):
        yield url


@pytest.mark.timeout(120)
async def test_two_replicas_never_overshoot_a_shared_budget(
    tmp_path: Path, upstream: FakeUpstream, redis_prefix: str
) -> None:
    upstream.script = Script(delay=0.02)
    budget = 600.0
    config = {
        "models": [
            {
                "name": "up",
                "price": {"input_per_million": 1_000_000, "output_per_million": 1_000_000},  # $1 a token
                "deployments": [{"type": "openai", "base_url": upstream.base_url, "model": "m"}],
            }
        ],
        "record": {"store": None},
        "limits": {
            "enabled": True,
            "redis": REDIS_URL,
            "key_prefix": redis_prefix,
            "rules": [{"per": "user", "spend_per_day": budget}],
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    body = {"model": "up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "user": "alice"}
    raw = json.dumps(body).encode()
    reserved = math.ceil(len(raw) / 4) + 10
    with ExitStack() as stack:
        urls = [stack.enter_context(gateway_process(path, tmp_path / f"gw{n}.log")) for n in range(2)]
        costs = await spend_until_refused(urls, 40, raw, price_per_token=1.0)
    key = f"{redis_prefix}day:user@*:user=alice:{dt.datetime.now(dt.UTC):%Y-%m-%d}"
    counted = float(redis.Redis.from_url(REDIS_URL).get(key) or 0)
    # Each request used less than it reserved, so the budget holds exactly: only a request that uses
    # more than it reserved (a prompt denser than 4 bytes a token, no max_tokens) can push it over.
    assert sum(costs) <= budget, f"overshot: {sum(costs)} of {budget}"
    assert len(costs) >= budget // reserved
    assert counted == pytest.approx(sum(costs)), "both replicas settled every reservation to its actual cost"
    assert len(upstream.requests) == len(costs)  # a refused request never reached the upstream
