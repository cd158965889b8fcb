"""The semantic cache with the real embedded MiniLM, on the memory store and on Redis.

Every test opens its conversation with a system message of its own: earlier turns are part of the
semantic bucket exactly, so tests sharing a gateway never see each other's entries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cache.conftest import REDIS_URL
from tests.fake_upstream import FakeUpstream
from tests.pipeline.test_cache_stage import cache_config, chat
from tests.support import Gateway, start_gateway

FRANCE = "What is the capital of France?"
PARAPHRASE = "what's the capital of france"  # cosine 0.908 with FRANCE under all-MiniLM-L6-v2


def semantic_config(upstream: FakeUpstream, embedding_model: str = "minilm", **cache: Any) -> dict[str, Any]:
    config = cache_config(
        upstream.base_url,
        semantic={"enabled": True, "threshold": 0.9, "embedding_model": embedding_model, "max_messages": 3},
        **cache,
    )
    config["models"].append({"name": "minilm", "deployments": [{"type": "sentence_embedding"}]})
    return config


@pytest.fixture(scope="module", params=["memory", "redis"])
def semantic(request: pytest.FixtureRequest, upstream_server: FakeUpstream) -> Iterator[Gateway]:
    cache: dict[str, Any] = {}
    prefix = f"opsgate-test:{uuid.uuid4().hex}:"
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.ping()
        except redis.exceptions.ConnectionError:
            pytest.skip(f"no Redis at {REDIS_URL}")
        cache = {"store": REDIS_URL, "key_prefix": prefix}
    gateway = start_gateway(semantic_config(upstream_server, **cache))
    yield gateway
    gateway.server.stop()
    if request.param == "redis":
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def ask(gateway: Gateway, question: str, session: str, **extra: Any) -> tuple[str, dict[str, Any], str]:
    """(cache header, answer, request id) for one question in the test's own conversation."""
    request_id = f"sem-{uuid.uuid4().hex}"
    messages = [{"role": "system", "content": f"session {session}"}, {"role": "user", "content": question}]
    body = {"model": "up", "messages": messages, "temperature": 0, **extra}
    response = chat(gateway, body, {"x-request-id": request_id})
    assert response.status_code == 200
    return response.headers["x-opsgate-cache"], response.json(), request_id


def test_a_paraphrase_is_a_semantic_hit(semantic: Gateway, upstream: FakeUpstream) -> None:
    session = uuid.uuid4().hex
    first, answer, _ = ask(semantic, FRANCE, session)
    assert first == "miss"
    kind, again, request_id = ask(semantic, PARAPHRASE, session)
    assert kind == "semantic-hit" and again == answer
    assert len(upstream.requests) == 1
    [record] = semantic.records_for(request_id)
    assert record["cached"] is True and record["tags"]["saved_cost"] > 0
    assert 0.9 <= record["tags"]["cache_similarity"] < 1.0


def test_unrelated_questions_do_not_hit(semantic: Gateway, upstream: FakeUpstream) -> None:
    session = uuid.uuid4().hex
    assert ask(semantic, FRANCE, session)[0] == "miss"
    assert ask(semantic, "How do I bake sourdough bread?", session)[0] == "miss"
    assert ask(semantic, "What is the capital of Germany?", session)[0] == "miss"  # similar words, other answer
    assert len(upstream.requests) == 3


def test_temperature_above_zero_never_hits_semantically(semantic: Gateway, upstream: FakeUpstream) -> None:
    session = uuid.uuid4().hex
    assert ask(semantic, FRANCE, session, temperature=0.7)[0] == "miss"
    assert ask(semantic, PARAPHRASE, session, temperature=0.7)[0] == "miss"
    assert ask(semantic, FRANCE, session, temperature=0.7)[0] == "hit"  # the exact cache still applies
    assert len(upstream.requests) == 2


def test_other_parameters_and_earlier_turns_must_match_exactly(semantic: Gateway, upstream: FakeUpstream) -> None:
    session = uuid.uuid4().hex
    assert ask(semantic, FRANCE, session)[0] == "miss"
    assert ask(semantic, PARAPHRASE, session, max_tokens=7)[0] == "miss"
    assert ask(semantic, PARAPHRASE, uuid.uuid4().hex)[0] == "miss"  # another system prompt
    assert len(upstream.requests) == 3


def test_long_conversations_are_only_cached_exactly(semantic: Gateway, upstream: FakeUpstream) -> None:
    history = [
        {"role": "system", "content": f"session {uuid.uuid4().hex}"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]

    def long(question: str) -> str:
        body = {"model": "up", "messages": [*history, {"role": "user", "content": question}], "temperature": 0}
        return chat(semantic, body).headers["x-opsgate-cache"]

    assert [long(FRANCE), long(PARAPHRASE), long(FRANCE)] == ["miss", "miss", "hit"]  # 4 messages > max 3


def test_a_semantic_hit_streams(semantic: Gateway, upstream: FakeUpstream) -> None:
    session = uuid.uuid4().hex
    ask(semantic, FRANCE, session)
    messages = [{"role": "system", "content": f"session {session}"}, {"role": "user", "content": PARAPHRASE}]
    response = chat(semantic, {"model": "up", "messages": messages, "temperature": 0, "stream": True})
    assert response.headers["x-opsgate-cache"] == "semantic-hit"
    assert '"Hello from upstream"' in response.text and response.text.rstrip().endswith("data: [DONE]")


def test_any_embedding_alias_works_even_an_upstream_one(upstream: FakeUpstream) -> None:
    # The fake upstream embeds every text as the same vector: any two prompts then look identical.
    gateway = start_gateway(semantic_config(upstream, embedding_model="up-embed"))
    try:
        session = uuid.uuid4().hex
        assert ask(gateway, FRANCE, session)[0] == "miss"
        assert ask(gateway, "How do I bake sourdough bread?", session)[0] == "semantic-hit"
        assert [r["path"] for r in upstream.requests] == ["/v1/embeddings", "/v1/chat/completions", "/v1/embeddings"]
    finally:
        gateway.server.stop()


def test_the_embedding_model_must_be_an_embedding_alias(upstream: FakeUpstream) -> None:
    from opsgate.domain.config import ConfigError

    with pytest.raises(ConfigError, match=r"cache\.semantic\.embedding_model"):
        start_gateway(semantic_config(upstream, embedding_model="up"))
