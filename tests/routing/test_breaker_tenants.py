"""One tenant alone cannot open a breaker that several tenants share (probe-e F2/F3).

Before: a tenant's own oversized requests (a huge ``max_tokens`` that runs past ``first_byte``, or an
upstream 429 "Request too large … Limit 30000, Requested 45000") counted as the deployment's failures,
once per attempt: with ``retries: 2`` two such requests opened the breaker and every other tenant got
503 ``circuit_open``; the 429 was a retried 503 ``upstream_overloaded`` that quoted the operator's
``organization org-…``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from opsgate.backends.base import UpstreamConnectTimeout
from opsgate.backends.upstream import CONNECTING, map_exceptions, redact_upstream_text, request_too_large
from opsgate.domain.errors import UpstreamTimeoutError
from opsgate.domain.reliability_config import BreakerConfig
from opsgate.routing.breaker import CircuitBreaker
from opsgate.routing.deployment import DeploymentHandle
from opsgate.routing.shared_breaker import BreakerSync, SharedCircuitBreaker
from tests.fake_upstream import FakeUpstream, Script
from tests.limits.support import REDIS_URL, scratch_prefix
from tests.support import Gateway, start_gateway, wait_until

ADMIN = "bootstrap-admin-key-for-breaker-tenant-tests-0123"
CHAT = "/v1/chat/completions"
TOO_LARGE = {
    "error": {
        "message": "Request too large for gpt-4o in organization org-AbC123xyz on tokens per min (TPM): "
        "Limit 30000, Requested 45000. The input or output tokens must be reduced in order to run successfully.",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
RATE_LIMITED = {
    "error": {
        "message": "Rate limit reached for gpt-4o in organization org-AbC123xyz on tokens per min (TPM): "
        "Limit 30000, Used 29500, Requested 900. Please try again in 2s.",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def state(breaker: CircuitBreaker) -> str:
    return breaker.state  # a str: mypy would narrow the Literal across assertions


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- the rule, on a fake clock -------------------------------------------------------------------


def test_one_tenants_consecutive_failures_do_not_open_a_shared_breaker() -> None:
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=5), Clock())
    for _ in range(5):
        breaker.record(True, "b")
    for _ in range(20):
        breaker.record(False, "a")
    assert state(breaker) == "closed"
    assert breaker.status()["spared_one_tenant"] == 16  # once per outcome, though both rules were met
    for _ in range(4):
        breaker.record(False, "b")
    assert state(breaker) == "closed"  # 24 in a row, 4 without a's (b: 4 of 9 failed)
    breaker.record(False, "b")
    assert state(breaker) == "open"  # 5 in a row without a's: the deployment fails for others too


def test_a_single_tenant_or_auth_off_deployment_opens_as_before() -> None:
    for tenants in (["a"], [None], ["a", None]):  # one tenant, auth off, one tenant + the operator
        breaker = CircuitBreaker(BreakerConfig(consecutive_failures=5), Clock())
        for n in range(4):
            breaker.record(False, tenants[n % len(tenants)])
        assert state(breaker) == "closed"
        breaker.record(False, tenants[0])
        assert state(breaker) == "open", tenants


def test_the_operators_failures_are_never_removed() -> None:
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=5), Clock())
    breaker.record(True, "b")
    for _ in range(3):
        breaker.record(False, "a")
    for _ in range(5):
        breaker.record(False, None)
    assert state(breaker) == "open"  # 8 in a row, 5 without a's


def test_error_rate_must_hold_without_the_top_tenant() -> None:
    clock = Clock()
    config = BreakerConfig(consecutive_failures=1000, error_rate=0.5, min_requests=10, window_seconds=30)
    breaker = CircuitBreaker(config, clock)
    for n in range(30):
        breaker.record(n % 2 == 0, "a")  # a: 15 of 30 failed
        breaker.record(True, "b")
    assert state(breaker) == "closed"  # 15 of 60
    for _ in range(40):
        breaker.record(False, "a")
    assert state(breaker) == "closed"  # 55 of 100 failed, all a's: b's 30 calls all fine
    assert breaker.spared > 0
    for _ in range(30):
        breaker.record(False, "b")
    assert state(breaker) == "open"  # without a: 30 of 60


def test_tenants_leave_with_the_window() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=3, window_seconds=30), clock)
    breaker.record(True, "b")
    breaker.record(False, "a")
    breaker.record(False, "a")
    clock.now = 31  # b's call and a's failures leave the window: a is the only tenant now
    breaker.record(False, "a")
    assert state(breaker) == "open"
    assert breaker.status()["reason"] == "3 consecutive failures"


def test_the_rate_rule_is_checked_when_the_consecutive_rule_is_held_back() -> None:
    breaker = CircuitBreaker(BreakerConfig(), Clock())  # 5 in a row, or half of >= 20 calls
    for n in range(12):  # b and c: 8 of 12 failed, never 3 in a row
        breaker.record(n % 3 == 2, "b" if n % 2 else "c")
    for _ in range(7):
        breaker.record(False, "a")
    # a's run alone meets the consecutive rule, held back (b and c had successes, no run of theirs);
    # 19 calls: too few for the rate rule yet.
    assert state(breaker) == "closed" and breaker.spared == 3
    breaker.record(False, "a")
    # 20 calls, and without a (the top) still 8 of 12 failed: the rate rule opens it, though the
    # consecutive rule was held back on this very outcome.
    assert state(breaker) == "open"
    assert breaker.status()["reason"] == "16 of 20 calls failed in 30s"


def test_an_outage_only_one_tenants_traffic_hits_opens_within_a_window() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(window_seconds=30), clock)
    for _ in range(3):  # b: a few calls, all fine
        clock.now += 0.1
        breaker.record(True, "b")
    while state(breaker) == "closed" and clock.now < 60:  # then only a calls, 100 a second, all failing
        clock.now += 0.01
        breaker.record(False, "a")
    assert state(breaker) == "open"
    assert 30 < clock.now <= 30.3 + 0.05  # once b's last success left the window, not never
    assert breaker.spared > 0


def test_without_a_success_of_the_others_the_rule_applies_to_every_call() -> None:
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=5), Clock())
    breaker.record(False, "b")
    for _ in range(4):
        breaker.record(False, "a")
    assert state(breaker) == "open"  # b's one call failed too: no evidence the deployment works


def test_a_run_older_than_the_window_is_no_error() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=5, window_seconds=30), clock)
    for _ in range(3):
        breaker.record(False, "a")
    clock.now = 31  # a's failures leave the window, its run does not (no success since)
    breaker.record(False, "b")
    breaker.record(False, "c")
    # 5 in a row, a the top of the run but no longer in the window; b and c had no success: it opens.
    assert state(breaker) == "open"


def test_few_calls_of_the_others_with_a_success_are_evidence_enough() -> None:
    config = BreakerConfig(consecutive_failures=1000, error_rate=0.5, min_requests=20)
    breaker = CircuitBreaker(config, Clock())
    breaker.record(True, "b")
    for _ in range(30):
        breaker.record(False, "a")
    assert state(breaker) == "closed"  # b: 0 of 1 failed, under the rate (no min_requests for the rest)
    breaker.record(False, "b")
    assert state(breaker) == "open"  # b: 1 of 2, at the rate


# --- over HTTP: two tenants, a scripted upstream --------------------------------------------------


class Picky(FakeUpstream):
    """Slow for a huge ``max_tokens``; OpenAI's 429s for 'HUGE' / 'BUSY' prompts; else as scripted."""

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp keeps the body: the base handler reads it again
        text = str(body.get("messages"))
        if (body.get("max_tokens") or 0) >= 100_000:
            self._record(request, body)
            await asyncio.sleep(3)  # a long generation, past first_byte (the gateway has given up)
            return web.json_response({})
        if "BAD" in text:  # a client's mistake, whatever the script says
            self._record(request, body)
            return web.json_response({"error": {"message": "messages[0] is malformed"}}, status=400)
        if "HUGE" in text and ("HUGEALL" in text or body.get("model") != "other"):  # the fallback's limits are higher
            self._record(request, body)
            return web.json_response(TOO_LARGE, status=429)
        if "BUSY" in text:
            self._record(request, body)
            return web.json_response(RATE_LIMITED, status=429, headers={"Retry-After": "2"})
        return await super()._completion(request)


@pytest.fixture(scope="module")
def picky() -> Iterator[Picky]:
    server = Picky()
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def upstream(picky: Picky) -> Picky:
    picky.script = Script()
    picky.requests.clear()
    return picky


def gateway_for(upstream: FakeUpstream, fallback: bool = False) -> Gateway:
    def deployment(model: str) -> dict[str, Any]:
        return {
            "type": "openai",
            "base_url": upstream.base_url,
            "model": model,
            "timeouts": {"first_byte": 2, "total": 10},
        }

    models: list[dict[str, Any]] = [
        {
            "name": "m",
            "routing": {"retries": 2, "backoff_initial": 0.001, "fallbacks": ["m2"] if fallback else []},
            "deployments": [deployment("real")],
        }
    ]
    if fallback:
        models.append({"name": "m2", "routing": {"retries": 0}, "deployments": [deployment("other")]})
    return start_gateway({"auth": {"enabled": True, "admin_key": ADMIN}, "models": models})


def mint(gateway: Gateway, tenant: str) -> dict[str, str]:
    response = httpx.post(
        gateway.url + "/admin/keys",
        headers={"Authorization": f"Bearer {ADMIN}"},
        json={"tenant": tenant, "role": "service", "name": f"{tenant}-key"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['secret']}"}


def chat(gateway: Gateway, key: dict[str, str], content: str = "hi", **extra: Any) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}  # extra may set model
    return httpx.post(gateway.url + CHAT, headers=key, json=body, timeout=60)


def handle(gateway: Gateway, alias: str = "m") -> DeploymentHandle:
    return gateway.app.state.gateway.router.handles[alias][0]  # type: ignore[no-any-return]


def attacker_calls(upstream: FakeUpstream) -> int:
    return sum(
        1
        for q in upstream.requests
        if (q["body"].get("max_tokens") or 0) >= 100_000 or "HUGE" in str(q["body"].get("messages"))
    )


@pytest.mark.parametrize("fallback", [False, True])
def test_one_tenants_huge_max_tokens_neither_opens_the_breaker_nor_multiplies(upstream: Picky, fallback: bool) -> None:
    gateway = gateway_for(upstream, fallback)
    try:
        a, b = mint(gateway, "tenant-a"), mint(gateway, "tenant-b")
        assert chat(gateway, b).status_code == 200
        if fallback:  # b uses the fallback alias too
            assert chat(gateway, b, model="m2").status_code == 200
        for _ in range(6):
            response = chat(gateway, a, "write a novel", max_tokens=100_000)
            assert response.status_code == 504, response.text
            assert response.json()["error"]["code"] == "upstream_timeout"
        # One upstream generation per alias and request, not retries + 1 of them.
        assert wait_until(lambda: attacker_calls(upstream) == 6 * (2 if fallback else 1), timeout=30)
        for alias in ["m", "m2"] if fallback else ["m"]:
            status = handle(gateway, alias).breaker.status()
            assert status["state"] == "closed", (alias, status)
            assert status["spared_one_tenant"] >= 1
        served = chat(gateway, b)
        assert served.status_code == 200, served.text
        assert served.headers["x-opsgate-deployment"] == "m#0"  # not silently moved to the fallback
        ready = httpx.get(gateway.url + "/readyz", timeout=30).json()
        assert ready["deployment_states"] == {"ready": ready["deployments_total"]}, ready  # m#0's breaker too
    finally:
        gateway.server.stop()


def test_upstream_request_too_large_is_the_clients_413_not_an_overload(upstream: Picky) -> None:
    gateway = gateway_for(upstream)
    try:
        a, b = mint(gateway, "tenant-a"), mint(gateway, "tenant-b")
        for _ in range(6):
            response = chat(gateway, a, "HUGE " + "x" * 100)
            assert response.status_code == 413, response.text
            error = response.json()["error"]
            assert set(error) >= {"message", "type", "param", "code"}
            assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
            assert error["upstream_status"] == 429
            assert "Retry-After" not in response.headers  # nothing to wait for: the request must shrink
            assert "AbC123xyz" not in response.text and "org-***" in error["message"]
        assert attacker_calls(upstream) == 6  # not retried
        status = handle(gateway, "m").breaker.status()
        assert status["state"] == "closed" and status["consecutive_failures"] == 0
        assert handle(gateway, "m").failures == 0
        assert chat(gateway, b).status_code == 200
    finally:
        gateway.server.stop()


def test_a_genuine_upstream_429_is_still_an_overload_with_the_org_redacted(upstream: Picky) -> None:
    gateway = gateway_for(upstream)
    try:
        a = mint(gateway, "tenant-a")
        response = chat(gateway, a, "BUSY")
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "upstream_overloaded" and response.headers["Retry-After"] == "2"
        assert "AbC123xyz" not in response.text and "org-***" in error["message"]
        assert len(upstream.requests) == 3  # retried, as before
    finally:
        gateway.server.stop()


def test_a_deployment_failing_for_every_tenant_still_opens(upstream: Picky) -> None:
    gateway = gateway_for(upstream)
    try:
        a, b = mint(gateway, "tenant-a"), mint(gateway, "tenant-b")
        assert chat(gateway, b).status_code == 200
        upstream.script = Script(mode="status", status=500, body={"error": {"message": "engine died"}})
        for _ in range(5):
            assert chat(gateway, a).status_code == 502
        assert handle(gateway).breaker.status()["state"] == "closed"  # only a's so far
        codes = [chat(gateway, b).status_code for _ in range(5)]
        assert codes[:4] == [502] * 4
        assert handle(gateway).breaker.status()["state"] == "open"
        assert codes[4] in (502, 503)
        refused = chat(gateway, a)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"
    finally:
        gateway.server.stop()


def test_another_tenants_client_errors_do_not_hold_an_outage_closed(upstream: Picky) -> None:
    gateway = gateway_for(upstream)
    try:
        a, b = mint(gateway, "tenant-a"), mint(gateway, "tenant-b")
        upstream.script = Script(mode="status", status=500, body={"error": {"message": "engine died"}})
        codes = []
        for _ in range(5):  # a's calls fail (one breaker vote per request); b's end in its own 400 in between
            codes.append(chat(gateway, a).status_code)
            response = chat(gateway, b, "BAD")
            assert response.status_code in (400, 503), response.text
        assert codes[:4] == [502] * 4 and codes[4] in (502, 503)
        status = handle(gateway).breaker.status()
        assert status["state"] == "open", status  # a client's 400 is no evidence the deployment works
        refused = chat(gateway, b, "BAD")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"
    finally:
        gateway.server.stop()


def test_a_half_open_probe_that_ends_in_a_client_error_does_not_close_the_breaker(upstream: Picky) -> None:
    gateway = gateway_for(upstream)
    try:
        b = mint(gateway, "tenant-b")
        breaker = handle(gateway).breaker
        assert isinstance(breaker, CircuitBreaker)
        breaker._open(time.monotonic() - breaker.config.open_seconds - 1, "test")  # its open time is up
        assert state(breaker) == "half_open"
        for _ in range(breaker.config.half_open_probes + 1):
            response = chat(gateway, b, "BAD")
            assert response.status_code == 400, response.text  # each took a probe slot and gave it back
        assert state(breaker) == "half_open"  # a client's 400 says nothing about the deployment
        for _ in range(breaker.config.half_open_probes):
            assert chat(gateway, b).status_code == 200
        assert state(breaker) == "closed"
    finally:
        gateway.server.stop()


def test_a_fallback_with_higher_limits_serves_what_the_primary_refused_for_size(upstream: Picky) -> None:
    gateway = gateway_for(upstream, fallback=True)
    try:
        a = mint(gateway, "tenant-a")
        served = chat(gateway, a, "HUGE " + "x" * 100)
        assert served.status_code == 200, served.text
        assert served.headers["x-opsgate-deployment"] == "m2#0"
        refused = chat(gateway, a, "HUGEALL " + "x" * 100)  # every deployment refuses it: the client's 413
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["code"] == "request_too_large"
        assert attacker_calls(upstream) == 2 + 2  # each deployment asked once per request, no retries
        for alias in ("m", "m2"):
            status = handle(gateway, alias).breaker.status()
            assert status["state"] == "closed" and status["consecutive_failures"] == 0, (alias, status)
            assert handle(gateway, alias).failures == 0
    finally:
        gateway.server.stop()


def test_a_connect_timeout_is_retried_on_the_same_deployment(upstream: Picky, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = gateway_for(upstream)
    try:
        a = mint(gateway, "tenant-a")
        backend = handle(gateway).backend
        real = backend.generate
        tries: list[int] = []

        async def generate(ctx: Any) -> Any:
            tries.append(1)
            if len(tries) == 1:  # aiohttp's connect / pool-wait timeout: the request was never sent
                with map_exceptions(backend.label, CONNECTING):
                    raise aiohttp.ConnectionTimeoutError("Connection timeout to host")
            return await real(ctx)

        monkeypatch.setattr(backend, "generate", generate)
        response = chat(gateway, a)
        assert response.status_code == 200, response.text
        assert len(tries) == 2 and len(upstream.requests) == 1
    finally:
        gateway.server.stop()


def test_a_read_timeout_is_not_retried_but_a_connect_timeout_says_so() -> None:
    with pytest.raises(UpstreamConnectTimeout), map_exceptions("up#0", CONNECTING):
        raise aiohttp.ConnectionTimeoutError("Connection timeout to host")
    with pytest.raises(UpstreamTimeoutError) as caught, map_exceptions("up#0", CONNECTING):
        raise aiohttp.SocketTimeoutError("Timeout on reading data from socket")
    assert not isinstance(caught.value, UpstreamConnectTimeout)


# --- the same rule in the breaker shared through Redis -------------------------------------------


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    with scratch_prefix() as prefix:
        yield prefix


@asynccontextmanager
async def replica(cfg: BreakerConfig) -> AsyncIterator[tuple[SharedCircuitBreaker, BreakerSync]]:
    breaker = SharedCircuitBreaker(cfg, "svc#0")
    assert cfg.shared is not None
    sync = BreakerSync(cfg.shared, cfg.key_prefix, [breaker], interval=cfg.sync_interval_seconds)
    await sync.connect()
    try:
        yield breaker, sync
    finally:
        await sync.close()


def shared_config(prefix: str, **extra: object) -> BreakerConfig:
    values: dict[str, object] = {
        "consecutive_failures": 3,
        "open_seconds": 30,
        "shared": REDIS_URL,
        "key_prefix": prefix,
        "sync_interval_seconds": 5,  # syncs are explicit
        **extra,
    }
    return BreakerConfig.model_validate(values)


async def test_shared_one_tenants_failures_on_every_replica_do_not_open_it(redis_prefix: str) -> None:
    cfg = shared_config(redis_prefix)
    async with replica(cfg) as (one, sync_one), replica(cfg) as (two, sync_two):
        two.record(True, "b")
        await sync_two.sync_once()
        for _ in range(4):
            one.record(False, "a")
            two.record(False, "a")
        await sync_one.sync_once()
        await sync_two.sync_once()
        status = two.status()
        assert status["scope"] == "shared" and status["state"] == "closed", status
        assert status["consecutive_failures"] == 8 and status["spared_one_tenant"] >= 1
        for _ in range(2):
            two.record(False, "b")
        await sync_two.sync_once()
        assert two.status()["state"] == "closed"  # 10 in a row, 2 without a's
        one.record(False, None)  # the operator's failure is never removed
        await sync_one.sync_once()
        assert one.status()["state"] == "open"
        await sync_two.sync_once()
        assert two.state == "open" and two.status()["reason"] == "11 consecutive failures"


async def test_shared_single_tenant_opens_as_before_and_the_rate_holds_without_the_top(redis_prefix: str) -> None:
    async with replica(shared_config(redis_prefix)) as (one, sync_one):
        for _ in range(3):
            one.record(False, "a")
        await sync_one.sync_once()
        assert one.state == "open"
    cfg = shared_config(redis_prefix + "rate:", consecutive_failures=1000, min_requests=10, error_rate=0.5)
    async with replica(cfg) as (one, sync_one):
        for _ in range(10):
            one.record(True, "b")
            one.record(False, "a")
        one.record(False, "a")
        await sync_one.sync_once()
        status = one.status()
        assert status["state"] == "closed" and status["window_failures"] == 11 and status["spared_one_tenant"] == 1
        for _ in range(10):
            one.record(False, "b")
        await sync_one.sync_once()
        assert one.state == "open"  # without a: 10 of 20


# --- what an upstream's error text may say ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (TOO_LARGE["error"]["message"], "organization org-***", "AbC123xyz"),
        ("Incorrect API key provided: sk-proj-abc1***wxyz. You can find your API key at …", "sk-***", "abc1"),
        (
            "exceed the rate limit for your organization (a22cf6e6-a940-4fff-8c4c-1580816ac7be) of 1,000,000",
            "(***)",
            "a22cf6e6",
        ),
        ("not authorized: arn:aws:bedrock:us-east-1:123456789012:foundation-model/x", "arn:aws:***", "123456789012"),
        ("project proj_Zx81 over budget; see https://user:secret@example.com/x", "proj_***", "secret"),
        ("an org-wide, user-facing limit", "an org-wide, user-facing limit", "***"),
        ("AccessDenied for account 123456789012 in us-east-1", "account *** in", "123456789012"),
        ("quota for subscription 0c3f7b2e-1111-2222-3333-444455556666 reached", "subscription ***", "0c3f7b2e"),
        ("Incorrect API key provided: sk-proj-abcDEF1234****5678. You can find", "sk-***. You", "abcDEF"),
        ("limit of 30000 tokens per minute for the account", "30000 tokens", "***"),
    ],
)
def test_upstream_error_texts_lose_the_operators_account_ids(text: str, kept: str, gone: str) -> None:
    redacted = redact_upstream_text(text)
    assert kept in redacted and gone not in redacted, redacted


@pytest.mark.parametrize(
    ("message", "too_large"),
    [
        (TOO_LARGE["error"]["message"], True),
        ("Request too large for o1 in organization org-1 on requests per day (RPD).", True),
        (RATE_LIMITED["error"]["message"], False),  # Used + Requested > Limit: the minute, not the request
        ("Rate limit reached for requests", False),
        ("Limit 1,000, Requested 1,001", True),
        ("You exceeded your current quota, please check your plan and billing details.", False),
    ],
)
def test_which_429_says_the_request_is_too_large(message: str, too_large: bool) -> None:
    assert request_too_large(message) is too_large


async def test_shared_another_tenant_counts_only_within_the_window(redis_prefix: str) -> None:
    cfg = shared_config(redis_prefix, window_seconds=5.0)
    async with replica(cfg) as (one, sync_one), replica(cfg) as (two, sync_two):
        two.record(True, "b")
        await sync_two.sync_once()
        for _ in range(3):
            one.record(False, "a")
        await sync_one.sync_once()
        assert one.status()["state"] == "closed"  # b used it within the window
        await asyncio.sleep(5.5)  # b's call leaves the window: a is the only tenant now
        one.record(False, "a")
        await sync_one.sync_once()
        assert one.status()["state"] == "open", one.status()


async def test_shared_without_a_success_of_the_others_the_rule_applies_to_every_call(redis_prefix: str) -> None:
    cfg = shared_config(redis_prefix)
    async with replica(cfg) as (one, sync_one), replica(cfg) as (two, sync_two):
        two.record(False, "b")
        await sync_two.sync_once()
        for _ in range(3):
            one.record(False, "a")
        await sync_one.sync_once()
        assert one.status()["state"] == "open", one.status()  # b's call failed too: no evidence


async def test_shared_the_rate_rule_is_checked_when_the_consecutive_rule_is_held_back(redis_prefix: str) -> None:
    cfg = shared_config(redis_prefix, min_requests=8, error_rate=0.5)  # 3 in a row, or half of >= 8
    async with replica(cfg) as (one, sync_one):
        for n in range(9):  # b and c: 6 of 9 failed, never 3 in a row
            one.record(n % 3 == 2, "b" if n % 2 else "c")
        for _ in range(4):
            one.record(False, "a")
        await sync_one.sync_once()
        status = one.status()
        assert status["state"] == "open" and "calls failed" in status["reason"], status


async def test_shared_the_top_tenants_successes_are_not_the_others(redis_prefix: str) -> None:
    cfg = shared_config(redis_prefix, consecutive_failures=1000, min_requests=4, error_rate=0.5)
    async with replica(cfg) as (one, sync_one):
        one.record(False, "a")  # a failed in the window: its calls are kept per tenant from here on
        one.record(False, "b")
        await sync_one.sync_once()
        for _ in range(3):
            one.record(True, "a")
        await sync_one.sync_once()
        assert one.status()["state"] == "closed"  # 2 of 5
        for _ in range(4):
            one.record(False, "a")
        await sync_one.sync_once()
        # 6 of 9 failed; without a (5 of its 8 calls failed) b's one call failed: a's 3 successes are a's.
        assert one.status()["state"] == "open", one.status()
