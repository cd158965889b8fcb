"""The ``x-ratelimit-*`` headers a caller sees come only from rules counted for that caller.

A probe found tenant A's ``x-ratelimit-remaining-tokens`` dropping by exactly tenant B's usage under a
shared ``per: model`` rule: a side channel on another tenant's traffic. A shared rule still refuses
(429, ``Retry-After``), without the used count in its message or headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.domain.reliability_config import LimitRule
from opsgate.limits import Demand, Identity, Limiter, MemoryCounters
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")


def _gateway(upstream: FakeUpstream, rules: list[dict[str, Any]]) -> Gateway:
    upstream.script = Script(content="answer")
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m", "breaker": {"enabled": False}}
    return start_gateway(
        {
            "models": [{"name": "up", "routing": {"retries": 0}, "deployments": [deployment]}],
            "limits": {"enabled": True, "rules": rules},
        }
    )


@pytest.fixture()
def shared(upstream: FakeUpstream) -> Iterator[Gateway]:
    rules = [
        {"per": "key", "requests_per_minute": 100},
        {"per": "model", "requests_per_minute": 1000, "tokens_per_minute": 1_000_000},
        {"per": "global", "tokens_per_minute": 2_000_000},
    ]
    gateway = _gateway(upstream, rules)
    yield gateway
    gateway.server.stop()


def _ask(gateway: Gateway, key: str, text: str = "hi") -> httpx.Response:
    body = {"model": "up", "messages": [{"role": "user", "content": text}]}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers, timeout=30)


def test_another_callers_traffic_never_shows_in_my_headers(shared: Gateway) -> None:
    first = _ask(shared, "key-a")
    assert first.status_code == 200
    seen = {name: first.headers.get(name) for name in RATE_HEADERS}
    # Only the caller's own per-key rule: 100 a minute, 99 left; no token header (only shared rules count tokens).
    assert seen == {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-remaining-tokens": None,
    }
    for _ in range(5):
        assert _ask(shared, "key-b", "a long secret business question " * 20).status_code == 200
    again = _ask(shared, "key-a")
    assert again.status_code == 200
    assert {name: again.headers.get(name) for name in RATE_HEADERS} == seen | {"x-ratelimit-remaining-requests": "98"}


def test_a_shared_rule_refuses_without_telling_others_counts(upstream: FakeUpstream) -> None:
    gateway = _gateway(
        upstream, [{"per": "key", "requests_per_minute": 100}, {"per": "model", "requests_per_minute": 3}]
    )
    try:
        for _ in range(3):
            assert _ask(gateway, "key-b").status_code == 200
        refused = _ask(gateway, "key-a")
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and "model up" in error["message"]
        assert "shared" in error["message"] and "3 of 3" not in error["message"]
        assert int(refused.headers["Retry-After"]) > 0
        # Only A's own rule in the headers: it has used none of its 100 (the refused request is not counted).
        assert refused.headers["x-ratelimit-remaining-requests"] == "100"
        assert refused.headers["x-ratelimit-limit-requests"] == "100"
    finally:
        gateway.server.stop()


async def test_headers_skip_shared_rules_and_keep_the_callers_own() -> None:
    limiter = Limiter(
        [
            LimitRule(per="global", tokens_per_minute=50),
            LimitRule(per="model", requests_per_minute=2),
            LimitRule(per="user", tokens_per_minute=1000),
            LimitRule(per="key+model", requests_per_minute=10),
        ],
        MemoryCounters(),
    )
    other = Identity(key="k2", user="bob", model="m", tenant="t2")
    assert await limiter.reserve(other, Demand(40, None)) is not None
    mine = await limiter.reserve(Identity(key="k1", user="alice", model="m", tenant="t1"), Demand(5, None))
    assert mine is not None
    assert mine.headers()["x-ratelimit-remaining-tokens"] == "995"  # alice's own 1000, not the global 50-45
    assert mine.headers()["x-ratelimit-remaining-requests"] == "9"  # her key on m, not the model's 2-2
