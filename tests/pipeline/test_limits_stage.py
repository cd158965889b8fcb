"""The limits stage over real HTTP: a gateway on loopback, the fake upstream behind it, real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
import redis

from opsgate.domain.config import ConfigError, parse_config
from opsgate.limits import MemoryCounters
from opsgate.pipeline.limits import LimitsStage
from opsgate.server.app import create_app
from tests.fake_upstream import FakeUpstream, Script
from tests.limits.support import REDIS_URL, scratch_prefix, spend_until_refused
from tests.support import Gateway, free_port, start_gateway, wait_until

DOLLAR_A_TOKEN: dict[str, float] = {"input_per_million": 1_000_000, "output_per_million": 1_000_000}
UPSTREAM_PROMPT_TOKENS = 7  # what the fake upstream reports


def gateway_config(
    upstream: FakeUpstream, limits: dict[str, Any], price: dict[str, float] | None = None
) -> dict[str, Any]:
    # No retries and no breaker: each request is one upstream call, and failures do not open a circuit.
    deployment = {
        "type": "openai",
        "base_url": upstream.base_url,
        "model": "m",
        "timeouts": {"total": 30},
        "breaker": {"enabled": False},
    }
    return {
        "models": [{"name": "up", "price": price, "routing": {"retries": 0}, "deployments": [deployment]}],
        "limits": {"enabled": True, **limits},
    }


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The limits settings for counting in this process, or in Redis under a scratch prefix."""
    if request.param == "memory":
        yield {}
        return
    with scratch_prefix() as prefix:
        yield {"redis": REDIS_URL, "key_prefix": prefix}


@contextmanager
def serving(config: dict[str, Any]) -> Iterator[Gateway]:
    gateway = start_gateway(config)
    try:
        yield gateway
    finally:
        gateway.server.stop()


def stage_of(gateway: Gateway) -> LimitsStage:
    stage = next(s for s in gateway.app.state.gateway.pipeline.stages if s.name == "limits")
    assert isinstance(stage, LimitsStage)
    return stage


def chat_body(user: str = "alice", max_tokens: int = 10, **extra: Any) -> bytes:
    body = {"model": "up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, "user": user}
    return json.dumps({**body, **extra}).encode()


def estimate(raw: bytes, max_tokens: int) -> int:
    """What the stage reserves: body bytes / 4, rounded up, plus max_tokens."""
    return math.ceil(len(raw) / 4) + max_tokens


def post(gateway: Gateway, raw: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        content=raw,
        headers={"content-type": "application/json", **(headers or {})},
        timeout=30,
    )


def test_requests_per_minute(upstream: FakeUpstream, backend: dict[str, Any]) -> None:
    with serving(
        gateway_config(upstream, {**backend, **{"rules": [{"per": "user", "requests_per_minute": 3}]}})
    ) as gateway:
        for remaining in ("2", "1", "0"):
            response = post(gateway, chat_body())
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit-requests"] == "3"
            assert response.headers["x-ratelimit-remaining-requests"] == remaining
            assert response.headers["x-ratelimit-reset-requests"].endswith("s")  # "41s" / "870ms", OpenAI's form
        refused = post(gateway, chat_body())
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded" and error["param"] is None
        assert error["message"].startswith("requests_per_minute for user alice: 3 of 3 used; retry in ")
        assert 1 <= int(refused.headers["Retry-After"]) <= 120
        assert post(gateway, chat_body(user="bob")).status_code == 200  # counted per user
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="up", messages=[{"role": "user", "content": "x"}], user="alice")
        status = stage_of(gateway).status()
        assert status["backend"] == ("redis" if backend else "memory") and status["admitted"] == 4
        assert status["refused"] == {"requests_per_minute": 2}


def test_tokens_per_minute_gives_back_what_was_not_used(upstream: FakeUpstream, backend: dict[str, Any]) -> None:
    limit, raw = 100, chat_body(max_tokens=40)
    reserved, used = estimate(raw, 40), UPSTREAM_PROMPT_TOKENS + upstream.script.words
    assert 2 * reserved > limit, "without settling, a second request could not pass"
    with serving(
        gateway_config(upstream, {**backend, **{"rules": [{"per": "user", "tokens_per_minute": limit}]}})
    ) as gateway:
        passed = 0
        while passed * used + reserved <= limit:
            response = post(gateway, raw)
            assert response.status_code == 200
            assert int(response.headers["x-ratelimit-remaining-tokens"]) == limit - passed * used - reserved
            passed += 1
        assert passed >= 2
        refused = post(gateway, raw)
        assert refused.status_code == 429
        assert refused.json()["error"]["message"].startswith(
            f"tokens_per_minute for user alice: {passed * used} of {limit} used, this request needs ~{reserved}; "
        )


def test_streams_settle_at_their_end(upstream: FakeUpstream, backend: dict[str, Any]) -> None:
    upstream.script = Script(words=9)
    limit = 1000
    with serving(
        gateway_config(upstream, {**backend, **{"rules": [{"per": "user", "tokens_per_minute": limit}]}})
    ) as gateway:
        stream = chat_body(max_tokens=300, stream=True)
        with httpx.stream(
            "POST", gateway.url + "/v1/chat/completions", content=stream, headers={"content-type": "application/json"}
        ) as response:
            assert response.headers["x-ratelimit-remaining-tokens"] == str(limit - estimate(stream, 300))
            assert response.read().endswith(b"data: [DONE]\n\n")
        raw = chat_body()
        expected = limit - (UPSTREAM_PROMPT_TOKENS + 9) - estimate(raw, 10)  # the stream's actual usage
        assert post(gateway, raw).headers["x-ratelimit-remaining-tokens"] == str(expected)


def test_concurrent_requests(upstream: FakeUpstream, backend: dict[str, Any]) -> None:
    upstream.script = Script(delay=0.5)
    with serving(gateway_config(upstream, {**backend, **{"rules": [{"per": "user", "concurrent": 2}]}})) as gateway:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                url = gateway.url + "/v1/chat/completions"
                headers = {"content-type": "application/json"}
                return await asyncio.gather(*(client.post(url, content=chat_body(), headers=headers) for _ in range(4)))

        responses = asyncio.run(burst())
        assert sorted(r.status_code for r in responses) == [200, 200, 429, 429]
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["error"]["message"] == "concurrent for user alice: 2 of 2 requests in flight; retry in 1s"
        assert refused.headers["Retry-After"] == "1"
        assert post(gateway, chat_body()).status_code == 200  # both slots were given back


def test_spend_per_day(upstream: FakeUpstream) -> None:
    budget, raw = 100.0, chat_body(max_tokens=10)
    reserved, used = float(estimate(raw, 10)), float(UPSTREAM_PROMPT_TOKENS + upstream.script.words)
    config = gateway_config(upstream, {"rules": [{"per": "user", "spend_per_day": budget}]}, price=DOLLAR_A_TOKEN)
    with serving(config) as gateway:
        spent = 0.0
        while spent + reserved <= budget:
            assert post(gateway, raw).status_code == 200
            spent += used
        refused = post(gateway, raw)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "rate_limit_error"
    assert error["message"].startswith(
        f"spend_per_day for user alice: {spent:g} of {budget:g} used, this request needs ~{reserved:g}; retry in "
    )
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime(now.year, now.month, now.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    assert abs(int(refused.headers["Retry-After"]) - (midnight - now).total_seconds()) < 5


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_concurrent_clients_never_overshoot_a_budget(upstream: FakeUpstream, backend: str) -> None:
    upstream.script = Script(delay=0.02)
    budget, raw = 600.0, chat_body(max_tokens=10)
    reserved = float(estimate(raw, 10))
    with scratch_prefix() as prefix:
        limits: dict[str, Any] = {"rules": [{"per": "user", "spend_per_day": budget}]}
        if backend == "redis":
            limits |= {"redis": REDIS_URL, "key_prefix": prefix}
        with serving(gateway_config(upstream, limits, price=DOLLAR_A_TOKEN)) as gateway:
            costs = await spend_until_refused([gateway.url], 40, raw, price_per_token=1.0)
            key = f"day:user@*:user=alice:{dt.datetime.now(dt.UTC):%Y-%m-%d}"
            store = stage_of(gateway).limiter.store
            if isinstance(store, MemoryCounters):
                counted = await store.read(key, time.time())
            else:
                counted = float(redis.Redis.from_url(REDIS_URL).get(prefix + key) or 0)
    # Each request used less than it reserved, so the budget holds exactly: only a request that uses
    # more than it reserved (a prompt denser than 4 bytes a token, no max_tokens) can push it over.
    assert sum(costs) <= budget, f"overshot: {sum(costs)} of {budget}"
    assert len(costs) >= budget // reserved
    assert counted == pytest.approx(sum(costs)), "every reservation was settled to the actual cost"


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_redis_unreachable(upstream: FakeUpstream, policy: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="opsgate.limits")
    limits = {
        "redis": f"redis://127.0.0.1:{free_port()}/0",
        "on_redis_error": policy,
        "rules": [{"per": "user", "requests_per_minute": 1}],
    }
    with serving(gateway_config(upstream, limits)) as gateway:
        responses = [post(gateway, chat_body()) for _ in range(3)]
        time.sleep(1.1)  # past the probe interval: the next request tries Redis again
        responses.append(post(gateway, chat_body()))
        status = stage_of(gateway).status()
        ready = httpx.get(gateway.url + "/readyz").json()
    if policy == "open":
        assert [r.status_code for r in responses] == [200] * 4  # over the limit of 1, but nothing is counted
        assert "x-ratelimit-remaining-requests" not in responses[0].headers
        assert status["passed_uncounted"] == 4
    else:
        assert [r.status_code for r in responses] == [503] * 4
        error = responses[0].json()["error"]
        assert error["code"] == "limits_unavailable" and responses[0].headers["Retry-After"] == "1"
        assert "Redis is unreachable" in error["message"] and "on_redis_error is closed" in error["message"]
        assert status["refused_unavailable"] == 4
    assert status["healthy"] is False and status["outages"] == 1 and status["on_redis_error"] == policy
    assert ready["limits"]["healthy"] is False and ready["limits"]["backend"] == "redis"  # visible in /readyz
    logged = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(logged) == 1 and f"on_redis_error is {policy}" in logged[0]


def test_a_cache_hit_uses_no_tokens(upstream: FakeUpstream) -> None:
    limit, raw = 1000, chat_body(max_tokens=40)
    config = gateway_config(upstream, {"rules": [{"per": "user", "tokens_per_minute": limit}]})
    config["cache"] = {"enabled": True}
    with serving(config) as gateway:
        first, second, third = (post(gateway, raw) for _ in range(3))
    assert [r.headers["x-opsgate-cache"] for r in (first, second, third)] == ["miss", "hit", "hit"]
    used = UPSTREAM_PROMPT_TOKENS + upstream.script.words  # only the miss went upstream
    assert int(third.headers["x-ratelimit-remaining-tokens"]) == limit - used - estimate(raw, 40)


def test_reservations_are_released_on_upstream_errors(upstream: FakeUpstream, backend: dict[str, Any]) -> None:
    limit, raw = 100, chat_body(max_tokens=40)
    rules = [{"per": "user", "tokens_per_minute": limit, "concurrent": 1}]
    assert 2 * estimate(raw, 40) > limit
    with serving(gateway_config(upstream, {**backend, **{"rules": rules}})) as gateway:
        upstream.script = Script(mode="status", status=500, body={"error": {"message": "boom"}})
        for _ in range(3):
            assert post(gateway, raw).status_code == 502
        upstream.script = Script(mode="stream_error")  # fails after two pieces
        response = post(gateway, chat_body(max_tokens=40, stream=True))
        assert b"upstream exploded" in response.content
        upstream.script = Script()
        # The stream settles when it ends (a task): the next request passes once it has.
        assert wait_until(lambda: post(gateway, raw).status_code == 200, 3)


def test_reservation_released_when_the_client_leaves_mid_stream(
    upstream: FakeUpstream, backend: dict[str, Any]
) -> None:
    upstream.script = Script(words=5000)  # about five seconds of stream
    limit, max_tokens = 100_000, 6000
    rules = [{"per": "user", "tokens_per_minute": limit, "concurrent": 1}]
    with serving(gateway_config(upstream, {**backend, **{"rules": rules}})) as gateway:
        raw = chat_body(max_tokens=max_tokens, stream=True)
        with httpx.stream(
            "POST", gateway.url + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        ) as response:
            assert response.status_code == 200
            next(response.iter_bytes())
        upstream.script = Script()  # the requests that follow are short
        left = time.monotonic()
        assert post(gateway, chat_body()).status_code in (200, 429)
        assert wait_until(lambda: post(gateway, chat_body()).status_code == 200, 3)
        assert time.monotonic() - left < 3, "released when the client left, not when the stream would have ended"
        after = post(gateway, chat_body())
        # The stream was charged its prompt and the pieces sent, not the 6000 tokens it reserved.
        assert int(after.headers["x-ratelimit-remaining-tokens"]) > limit - max_tokens


def test_a_request_the_client_abandons_is_charged_its_prompt(upstream: FakeUpstream, backend: dict[str, Any]) -> None:
    # Before, a client that gave up before the answer (a 499) was charged nothing: opening calls with
    # large prompts and leaving at once loaded the upstream while never counting a token.
    upstream.script = Script(delay=5.0)
    limit, used = 100_000, UPSTREAM_PROMPT_TOKENS + upstream.script.words
    abandoned = chat_body(max_tokens=500, messages=[{"role": "user", "content": "x" * 4000}])
    follow = chat_body()
    prompt = math.ceil(len(abandoned) / 4)
    with serving(
        gateway_config(upstream, {**backend, **{"rules": [{"per": "user", "tokens_per_minute": limit}]}})
    ) as gateway:
        # Left once the call has reached the upstream (a fixed read timeout could leave before that on a
        # loaded machine, and a call still in the gateway is rightly charged nothing).
        host, port = gateway.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as client:
            head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            client.sendall(f"{head}Content-Length: {len(abandoned)}\r\n\r\n".encode() + abandoned)
            assert wait_until(lambda: len(upstream.requests) == 1, 30), "the call never reached the upstream"
        upstream.script = Script()
        sent = 0

        def settled() -> bool:
            nonlocal sent
            remaining = int(post(gateway, follow).headers["x-ratelimit-remaining-tokens"])
            expected = limit - prompt - sent * used - estimate(follow, 10)
            sent += 1
            time.sleep(0.2)
            # Still reserved: prompt + 500 more; settled to nothing (the old rule): prompt fewer.
            assert remaining in (expected, expected - 500, expected + prompt), (remaining, expected)
            return remaining == expected

        assert wait_until(settled, 30)


def test_a_request_abandoned_before_reaching_the_upstream_is_not_charged(upstream: FakeUpstream) -> None:
    # Review: a client that gave up while still waiting in the gateway's own line (nothing sent upstream)
    # was charged its prompt too.
    upstream.script = Script(delay=5.0)
    limit = 100_000
    config = gateway_config(upstream, {"rules": [{"per": "user", "tokens_per_minute": limit}]})
    config["models"][0]["deployments"][0]["limits"] = {"max_in_flight": 1, "max_queue": 4, "queue_timeout": 30}
    with serving(config) as gateway:
        holder = threading.Thread(target=lambda: post(gateway, chat_body(user="alice")), daemon=True)
        holder.start()
        assert wait_until(lambda: len(upstream.requests) == 1, 10)
        waiting = chat_body(user="bob", max_tokens=500, messages=[{"role": "user", "content": "x" * 4000}])
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                gateway.url + "/v1/chat/completions",
                content=waiting,
                headers={"content-type": "application/json"},
                timeout=httpx.Timeout(30, read=0.5),
            )
        holder.join(30)
        upstream.script = Script()
        follow = chat_body(user="bob")
        prompt, used, sent = math.ceil(len(waiting) / 4), UPSTREAM_PROMPT_TOKENS + upstream.script.words, 0

        def settled() -> bool:
            nonlocal sent
            remaining = int(post(gateway, follow).headers["x-ratelimit-remaining-tokens"])
            expected = limit - sent * used - estimate(follow, 10)
            sent += 1
            time.sleep(0.2)
            # Still reserved: prompt + 500 more; charged its prompt (the first version of the rule): prompt less.
            assert remaining in (expected, expected - prompt - 500, expected - prompt), (remaining, expected)
            return remaining == expected

        assert wait_until(settled, 30)
        assert len(upstream.requests) == 1 + sent  # bob's abandoned call never reached the upstream


def test_per_key_limits_use_a_hash_of_the_bearer_token(upstream: FakeUpstream, backend: dict[str, Any]) -> None:
    with serving(
        gateway_config(upstream, {**backend, **{"rules": [{"per": "key", "requests_per_minute": 1}]}})
    ) as gateway:
        assert post(gateway, chat_body(), {"authorization": "Bearer sk-one"}).status_code == 200
        refused = post(gateway, chat_body(user="someone-else"), {"authorization": "Bearer sk-one"})
        assert refused.status_code == 429
        key = hashlib.sha256(b"sk-one").hexdigest()[:16]
        assert refused.json()["error"]["message"].startswith(f"requests_per_minute for key {key}: 1 of 1 used")
        assert "sk-one" not in refused.text
        assert post(gateway, chat_body(), {"authorization": "Bearer sk-two"}).status_code == 200
        assert post(gateway, chat_body()).status_code == 200  # no token: the "anonymous" key
        assert post(gateway, chat_body()).status_code == 429


def test_a_rule_for_an_unknown_model_is_a_config_error(upstream: FakeUpstream) -> None:
    config = gateway_config(upstream, {"rules": [{"per": "user", "model": "nope", "requests_per_minute": 1}]})
    with pytest.raises(ConfigError, match=r"limits.rules\[0\].model: no model named 'nope'"):
        create_app(parse_config(config))


def test_the_record_and_the_budget_price_what_served(upstream: FakeUpstream) -> None:
    """Alias price 1, deployment price 100: the record's cost and the budget's count are both at 100."""
    raw = chat_body(max_tokens=10)
    dear = {"input_per_million": 100_000_000, "output_per_million": 100_000_000}
    reserved, used = 100.0 * estimate(raw, 10), UPSTREAM_PROMPT_TOKENS + upstream.script.words
    # Room for one request and half of another at 100 a token; at 1 a token there would be room for many.
    budget = reserved + 50.0 * used
    config = gateway_config(upstream, {"rules": [{"per": "user", "spend_per_day": budget}]}, price=DOLLAR_A_TOKEN)
    config["models"][0]["deployments"][0]["price"] = dear
    with serving(config) as gateway:
        first = post(gateway, raw)
        assert first.status_code == 200
        (record,) = gateway.records_for(first.headers["x-request-id"])
        refused = post(gateway, raw)
    assert record["deployment"] == "up#0" and record["cost"] == pytest.approx(100.0 * used)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith(f"spend_per_day for user alice: {record['cost']:g} of ")


def test_per_user_limits_are_per_tenant_and_no_user_is_per_key(upstream: FakeUpstream, backend: dict[str, Any]) -> None:
    """FINDINGS #5: tenant A's "alice" used up tenant B's, and A's requests without ``user`` refused every
    client of every tenant that sends none (one "anonymous" bucket)."""
    admin = "limits-tenants-admin-key-0123456789abcdef"
    config = gateway_config(upstream, {**backend, "rules": [{"per": "user", "requests_per_minute": 2}]})
    config["auth"] = {"enabled": True, "admin_key": admin}
    with serving(config) as gateway:

        def key(tenant: str) -> dict[str, str]:
            made = httpx.post(
                gateway.url + "/admin/keys",
                json={"tenant": tenant, "role": "service"},
                headers={"authorization": f"Bearer {admin}"},
            )
            assert made.status_code == 201, made.text
            return {"authorization": f"Bearer {made.json()['secret']}"}

        a, a2, b = key("A"), key("A"), key("B")
        no_user = json.dumps(
            {"model": "up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
        ).encode()
        for body in (chat_body(user="alice"), no_user):
            assert [post(gateway, body, a).status_code for _ in range(3)] == [200, 200, 429]
        # Tenant B's own alice, and B's requests without a user, are untouched by A.
        assert [post(gateway, chat_body(user="alice"), b).status_code for _ in range(3)] == [200, 200, 429]
        assert post(gateway, no_user, b).status_code == 200
        # Within a tenant an end user is one, whichever key sends it; a request without one is its key's own.
        refused = post(gateway, chat_body(user="alice"), a2)
        assert refused.status_code == 429
        assert refused.json()["error"]["message"].startswith("requests_per_minute for user alice: 2 of 2 used")
        assert post(gateway, no_user, a2).status_code == 200
        refused = post(gateway, no_user, a)
        assert "for requests without a user on key " in refused.json()["error"]["message"]


def test_no_rule_and_a_key_without_limits_reserve_nothing_but_a_key_limit_still_counts() -> None:
    # Auth on, limits off: the stage skips the estimate and the limiter when no rule can apply, and
    # still enforces a key's own rule (the stage's before, driven directly).
    from opsgate.domain.context import RequestContext
    from opsgate.domain.principal import Principal
    from opsgate.domain.reliability_config import LimitRule
    from opsgate.limits.errors import RateLimitError
    from opsgate.pipeline.validation import ValidationStage

    config = parse_config(
        {
            "models": [
                {"name": "up", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}]}
            ]
        }
    )
    stage = LimitsStage.from_config(config)
    assert stage.limiter.rules == []

    async def reserved(limits: LimitRule | None) -> bool:
        principal = Principal(key_id="key_x", tenant="t", role="service", limits=limits)
        ctx = RequestContext(endpoint="chat", raw_body=chat_body(), headers={}, principal=principal)
        assert await ValidationStage(config).before(ctx) is None
        assert await stage.before(ctx) is None
        return stage.name in ctx.scratch

    assert asyncio.run(reserved(None)) is False
    assert stage.limiter.admitted == 0
    one_a_minute = LimitRule(per="key", requests_per_minute=1)
    assert asyncio.run(reserved(one_a_minute)) is True
    assert stage.limiter.admitted == 1
    with pytest.raises(RateLimitError):
        asyncio.run(reserved(one_a_minute))
