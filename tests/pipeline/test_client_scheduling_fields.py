"""Fields by which one client would spend or queue at the others' expense: chat ``best_of`` is bounded and
counted like completions'; a client-chosen ``service_tier`` or ``priority`` is refused unless it changes nothing.

A probe sent ``best_of: 1000000`` with ``use_beam_search``, ``service_tier: "priority"`` and
``priority: -100000`` to /v1/chat/completions: all 200, forwarded as sent, and best_of counted once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.domain.context import RequestContext
from opsgate.domain.requests import ChatCompletionRequest
from opsgate.pipeline.limits import estimate_tokens
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture()
def gateway(upstream: FakeUpstream) -> Iterator[Gateway]:
    upstream.script = Script(content="answer")
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "real", "breaker": {"enabled": False}}
    started = start_gateway(
        {
            "models": [
                {"name": "up", "routing": {"retries": 0}, "deployments": [deployment]},
                {"name": "up-embed", "kind": "embedding", "deployments": [deployment]},
            ],
            "limits": {"enabled": True, "rules": [{"per": "key", "tokens_per_minute": 10_000}]},
        }
    )
    yield started
    started.server.stop()


def _post(gateway: Gateway, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": "Bearer client-key"}
    return httpx.post(gateway.base_url + path, json=body, headers=headers, timeout=30)


def _chat(gateway: Gateway, **extra: Any) -> httpx.Response:
    return _post(gateway, "/chat/completions", {"model": "up", "max_tokens": 100, "messages": MESSAGES, **extra})


def test_chat_best_of_is_bounded_like_completions(gateway: Gateway, upstream: FakeUpstream) -> None:
    for best_of, status in ((1_000_000, 400), (21, 400), (0, 400), (20, 200), (2, 200)):
        response = _chat(gateway, best_of=best_of, use_beam_search=True)
        assert response.status_code == status, (best_of, response.text)
        if status == 400:
            assert response.json()["error"]["param"] == "best_of"
    assert [r["body"].get("best_of") for r in upstream.requests] == [20, 2]
    assert all(r["body"]["use_beam_search"] is True for r in upstream.requests)


def test_chat_best_of_is_counted_by_the_token_limits(gateway: Gateway, upstream: FakeUpstream) -> None:
    # 1,000 tokens out is well inside 10,000 a minute; twenty candidates of them are not.
    assert _chat(gateway, max_tokens=1000).status_code == 200
    refused = _chat(gateway, max_tokens=1000, best_of=20)
    assert refused.status_code == 429, refused.text
    assert "this request alone needs" in refused.json()["error"]["message"]
    assert len(upstream.requests) == 1


def test_the_estimate_counts_every_chat_candidate() -> None:
    def output(**extra: object) -> int:
        ctx = RequestContext(endpoint="chat", raw_body=b"{}", headers={})
        ctx.body = ChatCompletionRequest.model_validate({"model": "up", "messages": MESSAGES, **extra})
        return estimate_tokens(ctx, 256)[1]

    assert output(max_tokens=100) == 100 and output(max_tokens=100, best_of=5) == 500
    assert output(best_of=3) == 768 and output(max_completion_tokens=10, best_of=20) == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [("service_tier", "priority"), ("service_tier", "flex"), ("service_tier", "scale"), ("priority", -100_000),
     ("priority", 1)],
)  # fmt: skip
def test_client_chosen_tier_or_priority_is_a_400_naming_the_field(
    gateway: Gateway, upstream: FakeUpstream, field: str, value: object
) -> None:
    for path, body in (
        ("/chat/completions", {"model": "up", "messages": MESSAGES}),
        ("/completions", {"model": "up", "prompt": "hi"}),
        ("/embeddings", {"model": "up-embed", "input": "hi"}),
    ):
        response = _post(gateway, path, body | {field: value})
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["param"] == field and error["type"] == "invalid_request_error", error
        assert "operator" in error["message"]
    assert upstream.requests == []


def test_values_that_change_nothing_pass_as_sent(gateway: Gateway, upstream: FakeUpstream) -> None:
    for extra in ({"service_tier": "auto"}, {"service_tier": "default"}, {"priority": 0}, {}):
        assert _chat(gateway, **extra).status_code == 200, extra
    sent = [{k: r["body"][k] for k in ("service_tier", "priority") if k in r["body"]} for r in upstream.requests]
    assert sent == [{"service_tier": "auto"}, {"service_tier": "default"}, {"priority": 0}, {}]


def test_an_alias_can_let_clients_choose(upstream: FakeUpstream) -> None:
    # An operator whose clients use OpenAI's flex tier (or vLLM priorities) allows them per alias.
    upstream.script = Script(content="answer")
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "real", "breaker": {"enabled": False}}
    alias = {"routing": {"retries": 0}, "deployments": [deployment]}
    started = start_gateway(
        {
            "models": [
                {"name": "up", **alias, "client_service_tiers": ["auto", "flex"], "client_priorities": [-10, 10]},
                {"name": "strict", **alias},
            ]
        }
    )
    try:
        for extra, status in (
            ({"service_tier": "flex"}, 200),
            ({"priority": -10}, 200),
            ({"priority": 11}, 400),
            ({"service_tier": "default"}, 400),  # not in this alias's list
        ):
            assert _chat(started, **extra).status_code == status, extra
        refused = _post(started, "/chat/completions", {"model": "strict", "messages": MESSAGES, "service_tier": "flex"})
        assert refused.status_code == 400 and "'auto' or 'default'" in refused.json()["error"]["message"]
        assert [r["body"].get("service_tier") for r in upstream.requests] == ["flex", None]
    finally:
        started.server.stop()


@pytest.mark.parametrize("bounds", [[5, 1], [0, 10**7], ["a", 1]])
def test_client_priorities_must_be_a_sane_range(bounds: list[object]) -> None:
    from opsgate.domain.config import ConfigError, parse_config

    deployment = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    with pytest.raises(ConfigError):
        parse_config({"models": [{"name": "up", "deployments": [deployment], "client_priorities": bounds}]})


def test_a_fallback_must_allow_what_its_alias_lets_clients_choose() -> None:
    # The fallback alias is sent the body the client wrote for the first one: a premium tier allowed on
    # 'a' reached 'b''s deployment, whose operator never allowed it (second review of 74229a8).
    from opsgate.domain.config import ConfigError, parse_config

    deployment = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}

    def config(b: dict[str, object]) -> dict[str, object]:
        a = {"name": "a", "deployments": [deployment], "routing": {"fallbacks": ["b"]}}
        return {"models": [a | {"client_service_tiers": ["auto", "priority"], "client_priorities": [-5, 5]},
                           {"name": "b", "deployments": [deployment], **b}]}  # fmt: skip

    with pytest.raises(ConfigError, match="must allow"):
        parse_config(config({}))
    with pytest.raises(ConfigError, match="must allow"):
        parse_config(config({"client_service_tiers": ["auto", "priority"]}))  # priorities still narrower
    parse_config(config({"client_service_tiers": ["auto", "priority", "flex"], "client_priorities": [-9, 9]}))
