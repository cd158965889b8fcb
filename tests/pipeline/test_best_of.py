"""Legacy completions' ``best_of``: bounded like OpenAI's (≤ 20), and counted by the token limits."""

from __future__ import annotations

import httpx

from opsgate.domain.context import RequestContext
from opsgate.domain.requests import CompletionRequest
from opsgate.pipeline.limits import estimate_tokens
from tests.fake_upstream import FakeUpstream, Script
from tests.support import start_gateway


def test_best_of_past_twenty_is_a_400_and_never_reaches_the_upstream(upstream: FakeUpstream) -> None:
    # A probe's best_of 1,000,000 was passed to the upstream (a bill of a million answers) with a 200.
    upstream.script = Script()
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m", "breaker": {"enabled": False}}
    gateway = start_gateway({"models": [{"name": "up", "routing": {"retries": 0}, "deployments": [deployment]}]})
    try:
        body = {"model": "up", "prompt": "hi", "max_tokens": 5}
        for best_of, status in ((1_000_000, 400), (21, 400), (0, 400), (20, 200), (2, 200)):
            response = httpx.post(gateway.base_url + "/completions", json=body | {"best_of": best_of}, timeout=30)
            assert response.status_code == status, (best_of, response.text)
            if status == 400:
                assert response.json()["error"]["param"] == "best_of"
        assert [r["body"].get("best_of") for r in upstream.requests] == [20, 2]
    finally:
        gateway.server.stop()


def test_the_token_estimate_counts_every_candidate() -> None:
    def output(**extra: object) -> int:
        ctx = RequestContext(endpoint="completion", raw_body=b"{}", headers={})
        ctx.body = CompletionRequest.model_validate({"model": "up", "prompt": "hi", "max_tokens": 100, **extra})
        return estimate_tokens(ctx, 256)[1]

    assert output() == 100 and output(best_of=1) == 100 and output(best_of=5) == 500


def test_integer_fields_are_strict_as_openais_are(upstream: FakeUpstream) -> None:
    # max_tokens: true was served as 1 and best_of: "20" as 20 (pydantic's lax mode); OpenAI answers 400.
    upstream.script = Script()
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m", "breaker": {"enabled": False}}
    gateway = start_gateway({"models": [{"name": "up", "routing": {"retries": 0}, "deployments": [deployment]}]})
    try:
        chat = {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
        for field, value in (
            ("max_tokens", True),
            ("max_tokens", "5"),
            ("max_tokens", 5.0),
            ("seed", "7"),
            ("n", True),
        ):
            response = httpx.post(gateway.base_url + "/chat/completions", json=chat | {field: value}, timeout=30)
            assert response.status_code == 400, (field, value, response.text)
            assert response.json()["error"]["param"] == field
        completion = {"model": "up", "prompt": "hi", "best_of": "20"}
        response = httpx.post(gateway.base_url + "/completions", json=completion, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["param"] == "best_of"
        assert (
            httpx.post(gateway.base_url + "/chat/completions", json=chat | {"max_tokens": 5}, timeout=30).status_code
            == 200
        )
        assert len(upstream.requests) == 1
    finally:
        gateway.server.stop()
