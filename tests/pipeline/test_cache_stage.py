"""The response cache through a real gateway on loopback, in front of the scripted fake upstream.

Upstream calls are counted from ``upstream.requests``, so "served from cache" means "the upstream
never saw it". Each test uses its own prompts, so tests sharing the module's gateway never collide.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from opsgate.backends.registry import ModelRegistry
from opsgate.cache.memory_store import ENTRY_OVERHEAD
from opsgate.domain.config import Price, parse_config
from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext
from opsgate.domain.pricing import cost_of
from opsgate.domain.principal import Principal
from opsgate.pipeline.cache import CacheStage
from opsgate.pipeline.stage import PassStage, Pipeline
from opsgate.pipeline.validation import ValidationStage
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

PRICE = {"input_per_million": 1.0, "output_per_million": 2.0}


def cache_config(base_url: str, **cache: Any) -> dict[str, Any]:
    """Two chat aliases and an embedding alias on the fake upstream, with the cache on.

    No retries and no breaker: each client request is exactly one upstream call, so calls count hits.
    """
    deployment = {
        "type": "openai",
        "base_url": base_url,
        "model": "real-model",
        "timeouts": {"total": 10},
        "breaker": {"enabled": False},
    }
    once = {"retries": 0}
    return {
        "models": [
            {"name": "up", "price": PRICE, "routing": once, "deployments": [deployment]},
            {"name": "up2", "routing": once, "deployments": [deployment]},
            {
                "name": "up-embed",
                "kind": "embedding",
                "routing": once,
                "deployments": [{**deployment, "model": "real-embed"}],
            },
        ],
        "cache": {"enabled": True, **cache},
    }


@pytest.fixture(scope="module")
def cached(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    gateway = start_gateway(cache_config(upstream_server.base_url))
    yield gateway
    gateway.server.stop()


def question() -> list[dict[str, str]]:
    """A prompt no other test uses."""
    return [{"role": "user", "content": f"question {uuid.uuid4().hex}"}]


def chat(
    gateway: Gateway, body: dict[str, Any], headers: dict[str, str] | None = None, path: str = "/chat/completions"
) -> httpx.Response:
    return httpx.post(gateway.base_url + path, json=body, headers=headers or {}, timeout=30)


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


def cache_stage(gateway: Gateway) -> CacheStage:
    [stage] = [s for s in gateway.app.state.gateway.pipeline.stages if isinstance(s, CacheStage)]
    return stage


def test_repeat_is_a_hit_with_no_upstream_call(cached: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script(delay=0.2)  # a slow model, so a hit is visibly not a model call
    body = {"model": "up", "messages": question(), "temperature": 0.3}
    with httpx.Client(base_url=cached.base_url, timeout=30) as client:
        started = time.perf_counter()
        miss = client.post("/chat/completions", json=body)
        miss_ms = (time.perf_counter() - started) * 1000
        hit_ms = []
        for _ in range(20):
            started = time.perf_counter()
            hit = client.post("/chat/completions", json=body)
            hit_ms.append((time.perf_counter() - started) * 1000)
            assert hit.status_code == 200 and hit.headers["x-opsgate-cache"] == "hit"
            assert hit.json() == miss.json()
    assert miss.status_code == 200 and miss.headers["x-opsgate-cache"] == "miss"
    assert len(upstream.requests) == 1
    hit_p50 = statistics.median(hit_ms)
    print(f"\ncache latency: miss {miss_ms:.1f} ms (upstream sleeps 200 ms), hit p50 {hit_p50:.2f} ms")
    assert hit_p50 < 50 and hit_p50 < miss_ms / 4


# (what differs, the base request's extra fields, the variant's): each must get its own entry.
OUTPUT_CHANGING = [
    ("temperature", {}, {"temperature": 0.5}),
    ("temperature value", {"temperature": 0}, {"temperature": 0.5}),
    ("top_p", {}, {"top_p": 0.5}),
    ("max_tokens", {}, {"max_tokens": 10}),
    ("max_completion_tokens", {}, {"max_completion_tokens": 10}),
    ("stop", {}, {"stop": ["\n"]}),
    ("seed", {"seed": 1}, {"seed": 2}),
    ("n", {}, {"n": 1}),
    ("logprobs", {}, {"logprobs": True}),
    ("top_logprobs", {"logprobs": True}, {"logprobs": True, "top_logprobs": 2}),
    ("response_format", {}, {"response_format": {"type": "json_object"}}),
    ("presence_penalty", {}, {"presence_penalty": 0.5}),
    ("frequency_penalty", {}, {"frequency_penalty": 0.5}),
    ("tools", {}, {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
    ("tool_choice", {}, {"tool_choice": "none"}),
    ("logit_bias", {}, {"logit_bias": {"50256": -100}}),
    ("vendor extension", {}, {"top_k": 5}),
    ("system message", {}, {"prepend": {"role": "system", "content": "Answer in French."}}),
    ("message role", {}, {"role": "developer"}),
    ("model alias", {}, {"model": "up2"}),
]


@pytest.mark.parametrize(("what", "base_extra", "variant_extra"), OUTPUT_CHANGING, ids=[c[0] for c in OUTPUT_CHANGING])
def test_requests_differing_in_an_output_parameter_never_share(
    cached: Gateway, upstream: FakeUpstream, what: str, base_extra: dict[str, Any], variant_extra: dict[str, Any]
) -> None:
    messages = question()
    base = {"model": "up", "messages": messages, **base_extra}
    variant = {**base, **variant_extra}
    if "prepend" in variant:
        variant["messages"] = [variant.pop("prepend"), *messages]
    if "role" in variant:
        variant["messages"] = [{**messages[0], "role": variant.pop("role")}]
    assert chat(cached, base).headers["x-opsgate-cache"] == "miss"
    assert chat(cached, variant).headers["x-opsgate-cache"] == "miss"
    assert chat(cached, base).headers["x-opsgate-cache"] == "hit"
    assert chat(cached, variant).headers["x-opsgate-cache"] == "hit"
    assert len(upstream.requests) == 2


def test_delivery_only_fields_share_the_entry(cached: Gateway, upstream: FakeUpstream) -> None:
    base = {"model": "up", "messages": question(), "temperature": 0}
    assert chat(cached, base).headers["x-opsgate-cache"] == "miss"
    for extra in ({"user": "someone"}, {"metadata": {"team": "search"}}, {"temperature": 0.0, "stop": None}):
        assert chat(cached, {**base, **extra}).headers["x-opsgate-cache"] == "hit", extra
    assert len(upstream.requests) == 1


def test_completions_and_embeddings_are_cached(cached: Gateway, upstream: FakeUpstream) -> None:
    prompt = {"model": "up", "prompt": f"complete {uuid.uuid4().hex}"}
    assert chat(cached, prompt, path="/completions").headers["x-opsgate-cache"] == "miss"
    hit = chat(cached, prompt, path="/completions")
    assert hit.headers["x-opsgate-cache"] == "hit" and hit.json()["choices"][0]["text"] == "Hello from upstream"
    embed = {"model": "up-embed", "input": [f"embed {uuid.uuid4().hex}", "b"]}
    assert chat(cached, embed, path="/embeddings").headers["x-opsgate-cache"] == "miss"
    hit = chat(cached, embed, path="/embeddings")
    assert hit.headers["x-opsgate-cache"] == "hit" and len(hit.json()["data"]) == 2
    other = chat(cached, {**embed, "input": "something else"}, path="/embeddings")
    assert other.headers["x-opsgate-cache"] == "miss"
    assert len(upstream.requests) == 3


def test_no_cache_skips_the_lookup_and_refreshes_the_entry(cached: Gateway, upstream: FakeUpstream) -> None:
    body = {"model": "up", "messages": question()}
    chat(cached, body)
    upstream.script = Script(content="fresher answer")
    fresh = chat(cached, body, {"Cache-Control": "no-cache"})
    assert fresh.headers["x-opsgate-cache"] == "miss" and len(upstream.requests) == 2
    again = chat(cached, body)
    assert again.headers["x-opsgate-cache"] == "hit"
    assert again.json()["choices"][0]["message"]["content"] == "fresher answer"


def test_no_store_skips_the_fill(cached: Gateway, upstream: FakeUpstream) -> None:
    body = {"model": "up", "messages": question()}
    assert chat(cached, body, {"cache-control": "No-Store"}).headers["x-opsgate-cache"] == "miss"
    assert chat(cached, body).headers["x-opsgate-cache"] == "miss"  # nothing was stored
    assert chat(cached, body, {"cache-control": "no-store"}).headers["x-opsgate-cache"] == "hit"  # lookups still work
    assert len(upstream.requests) == 2


@pytest.mark.parametrize(
    ("upstream_status", "status"), [(500, 502), (429, 503), (400, 400)], ids=["5xx", "overloaded", "rejected"]
)
def test_errors_are_never_cached(cached: Gateway, upstream: FakeUpstream, upstream_status: int, status: int) -> None:
    body = {"model": "up", "messages": question()}
    upstream.script = Script(mode="status", status=upstream_status, body={"error": {"message": "no"}})
    for _ in range(2):
        response = chat(cached, body)
        assert response.status_code == status and response.headers["x-opsgate-cache"] == "miss"
    assert len(upstream.requests) == 2
    upstream.script = Script()
    assert chat(cached, body).headers["x-opsgate-cache"] == "miss"
    assert chat(cached, body).headers["x-opsgate-cache"] == "hit"


def test_streaming_hit_replays_through_the_openai_sdk(cached: Gateway, upstream: FakeUpstream) -> None:
    messages = question()
    whole = sdk(cached).chat.completions.create(model="up", messages=messages)  # type: ignore[arg-type]
    raw = sdk(cached).chat.completions.with_raw_response.create(
        model="up",
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-opsgate-cache"] == "hit"
    text, usage, finish = "", None, None
    for chunk in raw.parse():
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == whole.choices[0].message.content == "Hello from upstream"
    assert finish == "stop"
    assert usage is not None and whole.usage is not None
    assert usage.model_dump() == whole.usage.model_dump()
    assert len(upstream.requests) == 1


def test_a_completed_stream_is_stored_and_serves_both_shapes(cached: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script(words=4)
    messages = question()
    streamed = sdk(cached).chat.completions.create(model="up", messages=messages, stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "w0 w1 w2 w3 "
    whole = chat(cached, {"model": "up", "messages": messages})
    assert whole.headers["x-opsgate-cache"] == "hit"
    answer = whole.json()
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "w0 w1 w2 w3 "}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 4  # the usage chunk the gateway asked for is kept
    # Replayed without include_usage: no usage on the wire, and a well-formed SSE stream.
    replayed = chat(cached, {"model": "up", "messages": messages, "stream": True})
    assert replayed.headers["x-opsgate-cache"] == "hit"
    events = [line for line in replayed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and all('"usage"' not in e for e in events)
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("mode", ["truncate", "stream_error"])
def test_a_failed_stream_is_not_stored(cached: Gateway, upstream: FakeUpstream, mode: str) -> None:
    upstream.script = Script(mode=mode, words=6)
    body = {"model": "up", "messages": question(), "stream": True}
    events = chat(cached, body).text
    assert "[DONE]" not in events
    upstream.script = Script()
    assert chat(cached, {**body, "stream": False}).headers["x-opsgate-cache"] == "miss"
    assert len(upstream.requests) == 2


def test_a_stream_the_client_abandoned_is_not_stored(cached: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script(words=400)  # ~0.5 s of stream: the client leaves long before the end
    body = {"model": "up", "messages": question(), "stream": True}
    request_id = f"gone-{uuid.uuid4().hex}"
    url = cached.base_url + "/chat/completions"
    with httpx.stream("POST", url, json=body, headers={"x-request-id": request_id}, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break
    [record] = cached.records_for(request_id)
    assert record["status"] == 499  # the gateway saw the client leave
    time.sleep(0.8)  # the upstream's stream would have finished by now
    upstream.script = Script()
    assert chat(cached, {**body, "stream": False}).headers["x-opsgate-cache"] == "miss"


def test_records_show_hits_and_the_saved_cost(cached: Gateway, upstream: FakeUpstream) -> None:
    body = {"model": "up", "messages": question()}
    fill_id, hit_id, stream_id = (f"{kind}-{uuid.uuid4().hex}" for kind in ("fill", "hit", "stream"))
    chat(cached, body, {"x-request-id": fill_id})
    chat(cached, body, {"x-request-id": hit_id})
    chat(cached, {**body, "stream": True}, {"x-request-id": stream_id})
    [filled] = cached.records_for(fill_id)
    expected = cost_of(Price(**PRICE), {"prompt_tokens": 7, "completion_tokens": 5})
    assert filled["cached"] is False and "cache_hit" not in (filled["tags"] or {})
    for request_id in (hit_id, stream_id):
        [record] = cached.records_for(request_id)
        assert record["status"] == 200 and record["cached"] is True
        assert record["tags"]["cache_hit"] is True
        assert record["tags"]["saved_cost"] == pytest.approx(expected)
        assert record["cost"] == 0.0  # a hit costs nothing; the saving is in saved_cost
        assert record["output_text"] == "Hello from upstream"
        assert not any(key.startswith("_") for key in record["tags"])  # no stage scratch in the record
    assert len(upstream.requests) == 1


def test_entries_expire_after_the_ttl(upstream: FakeUpstream) -> None:
    gateway = start_gateway(cache_config(upstream.base_url, ttl_seconds=0.4))
    try:
        body = {"model": "up", "messages": question()}
        assert chat(gateway, body).headers["x-opsgate-cache"] == "miss"
        assert chat(gateway, body).headers["x-opsgate-cache"] == "hit"
        time.sleep(0.6)
        assert chat(gateway, body).headers["x-opsgate-cache"] == "miss"
        assert len(upstream.requests) == 2
    finally:
        gateway.server.stop()


def test_a_tenant_named_default_never_shares_the_operators_entries(upstream: FakeUpstream) -> None:
    # Tenant-less traffic was keyed as tenant "default": a tenant of that name got the operator's
    # cached answers (and could poison them). Now it is keyed by null.
    admin = "bootstrap-admin-key-for-cache-tenants-0123456789"
    gateway = start_gateway(cache_config(upstream.base_url) | {"auth": {"enabled": True, "admin_key": admin}})
    try:
        created = httpx.post(
            gateway.url + "/admin/keys",
            headers={"Authorization": f"Bearer {admin}"},
            json={"tenant": "default", "role": "service"},
        )
        assert created.status_code in (200, 201), created.text
        tenant_key = created.json()["secret"]
        body = {"model": "up", "messages": question()}
        operator = chat(gateway, body, {"Authorization": f"Bearer {admin}"})
        assert operator.status_code == 200 and operator.headers["x-opsgate-cache"] == "miss"
        tenant = chat(gateway, body, {"Authorization": f"Bearer {tenant_key}"})
        assert tenant.status_code == 200 and tenant.headers["x-opsgate-cache"] == "miss", tenant.headers
        assert chat(gateway, body, {"Authorization": f"Bearer {tenant_key}"}).headers["x-opsgate-cache"] == "hit"
        assert chat(gateway, body, {"Authorization": f"Bearer {admin}"}).headers["x-opsgate-cache"] == "hit"
        assert len(upstream.requests) == 2
    finally:
        gateway.server.stop()


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_an_answer_past_max_entry_bytes_is_served_not_kept(upstream: FakeUpstream, store: str) -> None:
    # The Redis store took any size (a 40 MB answer was one 42 MB value); max_bytes bounded only memory.
    extra = {"max_entry_bytes": 4096}
    if store == "redis":
        extra |= {"store": "redis://127.0.0.1:6379/0", "key_prefix": f"opsgate-test:{uuid.uuid4().hex}:"}
    gateway = start_gateway(cache_config(upstream.base_url, **extra))
    try:
        upstream.script = Script(content="x" * 10_000)
        big = {"model": "up", "messages": question()}
        assert [chat(gateway, big).headers["x-opsgate-cache"] for _ in range(2)] == ["miss", "miss"]
        upstream.script = Script()
        small = {"model": "up", "messages": question()}
        assert [chat(gateway, small).headers["x-opsgate-cache"] for _ in range(2)] == ["miss", "hit"]
        assert len(upstream.requests) == 3
    finally:
        gateway.server.stop()


def test_the_byte_bound_evicts_the_least_recently_used(upstream: FakeUpstream) -> None:
    # Every answer here is the same size; room for two entries, not three.
    probe = chat_body_size(upstream)
    gateway = start_gateway(cache_config(upstream.base_url, max_bytes=int(probe * 2.5)))
    try:
        a, b, c = ({"model": "up", "messages": [{"role": "user", "content": name * 8}]} for name in "abc")
        chat(gateway, a)
        chat(gateway, b)
        assert chat(gateway, a).headers["x-opsgate-cache"] == "hit"  # a is now the most recently used
        chat(gateway, c)  # evicts b
        assert chat(gateway, a).headers["x-opsgate-cache"] == "hit"
        assert chat(gateway, c).headers["x-opsgate-cache"] == "hit"
        assert chat(gateway, b).headers["x-opsgate-cache"] == "miss"
        status = cache_stage(gateway).status()
        assert status["evictions"] == 2 and status["entries"] == 2  # b, then a when b came back
        assert isinstance(status["bytes"], int) and status["bytes"] <= int(probe * 2.5)
    finally:
        gateway.server.stop()


def chat_body_size(upstream: FakeUpstream) -> int:
    """What one of the eviction test's entries weighs in the memory store (key, answer, overhead)."""
    gateway = start_gateway(cache_config(upstream.base_url))
    try:
        answer = chat(gateway, {"model": "up", "messages": [{"role": "user", "content": "z" * 8}]})
        upstream.requests.clear()
        return 64 + len(answer.content) + ENTRY_OVERHEAD
    finally:
        gateway.server.stop()


class Tenant(PassStage):
    """Stands in for authentication: puts the request's tenant on the context."""

    name = "tenant"

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        ctx.principal = Principal(key_id=None, tenant=ctx.headers.get("x-tenant"), role="developer")
        return None


async def test_tenants_never_share_entries() -> None:
    config = parse_config(cache_config("http://127.0.0.1:9/v1"))
    calls: list[str | None] = []

    async def model(ctx: RequestContext) -> GatewayResponse:
        calls.append(ctx.tenant)
        return JsonResult({"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]})

    stage = CacheStage.from_config(config, ModelRegistry(config))
    pipeline = Pipeline([Tenant(), ValidationStage(config), stage], model)
    raw = b'{"model": "up", "messages": [{"role": "user", "content": "same words"}]}'

    async def ask(tenant: str | None) -> str:
        headers = {"x-tenant": tenant} if tenant else {}
        response = await pipeline.handle(RequestContext(endpoint="chat", raw_body=raw, headers=headers))
        return response.headers["x-opsgate-cache"]

    assert [await ask("acme"), await ask("globex"), await ask(None)] == ["miss", "miss", "miss"]
    assert [await ask("acme"), await ask("globex"), await ask(None)] == ["hit"] * 3
    # A tenant named "default" is a tenant like any other, not the tenant-less traffic's slot.
    assert [await ask("default"), await ask("default")] == ["miss", "hit"]
    assert calls == ["acme", "globex", None, "default"]


def test_purge_drops_every_entry(cached: Gateway, upstream: FakeUpstream) -> None:
    body = {"model": "up", "messages": question()}
    assert chat(cached, body).headers["x-opsgate-cache"] == "miss"
    assert chat(cached, body).headers["x-opsgate-cache"] == "hit"
    purged = httpx.delete(cached.url + "/admin/cache")
    assert purged.status_code == 200 and purged.json()["entries_dropped"] >= 1
    assert chat(cached, body).headers["x-opsgate-cache"] == "miss"
    audit = httpx.get(cached.url + "/admin/audit").json()["data"]
    assert any(e["action"] == "cache_purge" for e in audit)
