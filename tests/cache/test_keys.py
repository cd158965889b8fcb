"""Cache keys: which differences make a different answer, and which requests are semantic."""

from __future__ import annotations

from typing import Any

import pytest

from opsgate.cache.keys import SemanticRules, alias_scope, cache_directives, request_keys
from opsgate.domain.config import ModelAlias
from opsgate.domain.requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

RULES = SemanticRules("embedder", max_messages=3)
BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


def keys(body: dict[str, Any], tenant: str = "default", endpoint: str = "chat", scope: str = "s") -> Any:
    model = {"chat": ChatCompletionRequest, "completion": CompletionRequest, "embedding": EmbeddingRequest}[endpoint]
    return request_keys(endpoint, model.model_validate(body), tenant, scope, RULES)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.1},
        {"top_p": 0.9},
        {"max_tokens": 5},
        {"max_completion_tokens": 5},
        {"stop": "x"},
        {"seed": 3},
        {"n": 1},
        {"logprobs": True},
        {"logprobs": True, "top_logprobs": 1},
        {"response_format": {"type": "json_object"}},
        {"presence_penalty": 1.0},
        {"frequency_penalty": 1.0},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"parallel_tool_calls": False},
        {"model": "other"},
        {"messages": [{"role": "user", "content": "What is the capital of Spain?"}]},
    ],
    ids=lambda change: ",".join(change),
)
def test_every_output_parameter_is_in_the_exact_key(change: dict[str, Any]) -> None:
    assert keys({**BASE, **change}).exact != keys(BASE).exact


@pytest.mark.parametrize(
    "change",
    [
        {"user": "u"},
        {"metadata": {"a": "b"}},
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
    ],
    ids=lambda change: ",".join(change),
)
def test_delivery_and_bookkeeping_fields_are_not(change: dict[str, Any]) -> None:
    assert keys({**BASE, **change}).exact == keys(BASE).exact


def test_tenant_scope_and_endpoint_separate_entries() -> None:
    assert keys(BASE, tenant="a").exact != keys(BASE, tenant="b").exact
    # Tenant-less traffic (operators, auth off) never shares entries with a tenant, whatever its name.
    for name in ("default", "", "None", "null"):
        assert (
            request_keys("chat", ChatCompletionRequest.model_validate(BASE), None, "s").exact
            != keys(BASE, tenant=name).exact
        )
    tenantless = request_keys("chat", ChatCompletionRequest.model_validate(BASE | {"temperature": 0}), None, "s", RULES)
    assert tenantless.bucket != keys(BASE | {"temperature": 0}, tenant="default").bucket
    assert keys(BASE, scope="deployments-v1").exact != keys(BASE, scope="deployments-v2").exact
    prompt = {"model": "m", "prompt": "What is the capital of France?"}
    assert keys(prompt, endpoint="completion").exact != keys(BASE).exact


def test_alias_scope_changes_with_the_model_served_not_with_secrets() -> None:
    def alias(model: str, key: str) -> ModelAlias:
        return ModelAlias.model_validate(
            {
                "name": "a",
                "deployments": [{"type": "openai", "base_url": "http://h/v1", "model": model, "api_key": key}],
            }
        )

    assert alias_scope(alias("m1", "k1")) == alias_scope(alias("m1", "k2"))
    assert alias_scope(alias("m1", "k1")) != alias_scope(alias("m2", "k1"))


def test_semantic_only_at_temperature_zero() -> None:
    assert not keys(BASE).semantic  # unset temperature means the backend's default, not 0
    assert not keys({**BASE, "temperature": 0.2}).semantic
    found = keys({**BASE, "temperature": 0})
    assert found.semantic and found.text == "What is the capital of France?"


def test_semantic_bucket_holds_everything_but_the_last_user_text() -> None:
    def bucket(messages: list[dict[str, Any]], **extra: Any) -> str | None:
        return keys({"model": "m", "messages": messages, "temperature": 0, **extra}).bucket

    one = [{"role": "user", "content": "a question"}]
    other = [{"role": "user", "content": "another question"}]
    system = {"role": "system", "content": "Be brief."}
    assert bucket(one) == bucket(other)
    assert bucket([system, *one]) == bucket([system, *other])
    assert bucket([system, *one]) != bucket(one)
    assert bucket(one, max_tokens=5) != bucket(one)
    assert keys({"model": "m", "messages": one, "temperature": 0}, tenant="t").bucket != bucket(one)


def test_semantic_eligibility_limits() -> None:
    long = [{"role": "user", "content": str(i)} for i in range(4)]
    assert not keys({"model": "m", "messages": long, "temperature": 0}).semantic  # over max_messages
    ends_with_assistant = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert not keys({"model": "m", "messages": ends_with_assistant, "temperature": 0}).semantic
    parts = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
    assert not keys({"model": "m", "messages": parts, "temperature": 0}).semantic
    assert keys({"model": "m", "prompt": "q", "temperature": 0}, endpoint="completion").semantic
    assert not keys({"model": "m", "input": "q"}, endpoint="embedding").semantic


def test_cache_control_directives() -> None:
    assert cache_directives({"cache-control": "No-Cache, no-store, max-age=0"}) == {"no-cache", "no-store", "max-age"}
    assert cache_directives({}) == frozenset()
