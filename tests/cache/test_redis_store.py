"""The Redis store against a real Redis: entries, TTL, the vector index, sharing, and outages."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from opsgate.cache.redis_store import RedisStore, redacted
from opsgate.cache.store import SemanticEntry
from tests.cache.conftest import REDIS_URL
from tests.fake_upstream import FakeUpstream, Script
from tests.pipeline.test_cache_stage import cache_config, chat, question
from tests.support import free_port, start_gateway, wait_until


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture()
async def store(redis_prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(REDIS_URL, prefix=redis_prefix, max_vectors_per_bucket=3)
    await store.start()
    yield store
    await store.close()


async def test_entries_and_ttl(store: RedisStore, redis_client: redis.Redis) -> None:
    await store.put("k", b"answer", ttl=60)
    assert await store.get("k") == b"answer"
    assert 59_000 < redis_client.pttl(store.entry_key("k")) <= 60_000
    await store.put("short", b"x", ttl=0.05)
    assert wait_until(lambda: redis_client.exists(store.entry_key("short")) == 0, timeout=2)
    assert await store.get("short") is None
    assert await store.get("never") is None


async def test_vectors_are_bytes_in_a_hash_per_bucket(store: RedisStore, redis_client: redis.Redis) -> None:
    await store.put("near", b"near answer", 60, SemanticEntry("b1", unit(1, 0.1)))
    await store.put("far", b"far answer", 60, SemanticEntry("b1", unit(0, 1)))
    vectors, times = store.bucket_keys("b1")
    stored = redis_client.hgetall(vectors)
    assert set(stored) == {b"near", b"far"}
    assert np.frombuffer(stored[b"near"], dtype="<f4").tolist() == pytest.approx(unit(1, 0.1).tolist())
    assert redis_client.zcard(times) == 2 and redis_client.pttl(vectors) > 0
    match = await store.search("b1", unit(1, 0), threshold=0.9)
    assert match is not None and match.value == b"near answer" and match.score > 0.99
    assert await store.search("b1", unit(-1, 0), threshold=0.9) is None
    assert await store.search("b2", unit(1, 0), threshold=0.9) is None


async def test_a_bucket_keeps_only_its_newest_vectors(store: RedisStore, redis_client: redis.Redis) -> None:
    for key in "abcde":
        await store.put(key, key.encode(), 60, SemanticEntry("b", unit(1, 0)))
    vectors, times = store.bucket_keys("b")
    assert set(redis_client.hkeys(vectors)) == {b"c", b"d", b"e"} and redis_client.zcard(times) == 3
    assert await store.get("a") == b"a"  # trimmed from search, still an exact hit


async def test_expired_answers_leave_the_index_when_found(store: RedisStore, redis_client: redis.Redis) -> None:
    await store.put("gone", b"old", 60, SemanticEntry("b", unit(1, 0)))
    await store.put("kept", b"kept", 60, SemanticEntry("b", unit(1, 0.2)))
    redis_client.delete(store.entry_key("gone"))  # as if its TTL ran out
    match = await store.search("b", unit(1, 0), threshold=0.9)
    assert match is not None and match.value == b"kept"
    assert redis_client.hkeys(store.bucket_keys("b")[0]) == [b"kept"]


async def test_unreachable_redis_is_an_empty_cache_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore(f"redis://:secret@127.0.0.1:{free_port()}/0", prefix="x:")
    caplog.set_level(logging.WARNING, "opsgate.cache")
    await store.start()
    for _ in range(3):
        store._retry_at = 0.0  # skip the back-off so every call really tries
        assert await store.get("k") is None
        store._retry_at = 0.0
        await store.put("k", b"v", 60, SemanticEntry("b", unit(1, 0)))
        store._retry_at = 0.0
        assert await store.search("b", unit(1, 0), 0.5) is None
    assert await store.get("k") is None  # within the back-off: not even tried
    status = store.status()
    assert status["healthy"] is False and status["errors"] == 10 and status["skipped"] == 1
    assert "secret" not in str(status)
    warnings = [r for r in caplog.records if r.name == "opsgate.cache"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    assert "secret" not in warnings[0].getMessage()
    await store.close()


def test_redacted() -> None:
    assert redacted("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redacted("redis://:pw@h:1/0") == "redis://***@h:1/0"
    assert redacted("redis://h:1/0") == "redis://h:1/0"


def redis_cache(upstream: FakeUpstream, url: str, prefix: str, **cache: Any) -> dict[str, Any]:
    return cache_config(upstream.base_url, store=url, key_prefix=prefix, **cache)


def test_two_gateways_share_one_redis(upstream: FakeUpstream, redis_prefix: str, redis_client: redis.Redis) -> None:
    a = start_gateway(redis_cache(upstream, REDIS_URL, redis_prefix))
    b = start_gateway(redis_cache(upstream, REDIS_URL, redis_prefix))
    try:
        body = {"model": "up", "messages": question()}
        assert chat(a, body).headers["x-opsgate-cache"] == "miss"
        hit = chat(b, body)
        assert hit.headers["x-opsgate-cache"] == "hit"
        assert hit.json()["choices"][0]["message"]["content"] == "Hello from upstream"
        # A stream completed on A is stored when it ends (in the background) and served by B.
        upstream.script = Script(words=3)
        streamed = {"model": "up", "messages": question(), "stream": True}
        assert "[DONE]" in chat(a, streamed).text
        assert wait_until(lambda: len(list(redis_client.scan_iter(match=redis_prefix + "e:*"))) == 2, timeout=5)
        replay = chat(b, streamed)
        assert replay.headers["x-opsgate-cache"] == "hit" and '"w0 w1 w2 "' in replay.text
        assert len(upstream.requests) == 2
    finally:
        a.server.stop()
        b.server.stop()


def test_redis_down_still_answers_as_a_miss(upstream: FakeUpstream) -> None:
    gateway = start_gateway(redis_cache(upstream, f"redis://127.0.0.1:{free_port()}/0", f"down-{uuid.uuid4().hex}:"))
    try:
        body = {"model": "up", "messages": question()}
        for stream in (False, False, True):
            response = httpx.post(gateway.base_url + "/chat/completions", json={**body, "stream": stream}, timeout=10)
            assert response.status_code == 200 and response.headers["x-opsgate-cache"] == "miss"
        assert len(upstream.requests) == 3
    finally:
        gateway.server.stop()


async def test_clear_drops_only_this_prefix(store: RedisStore, redis_client: redis.Redis) -> None:
    await store.put("a", b"1", 60)
    await store.put("b", b"2", 60, SemanticEntry(bucket="bk", vector=unit(1, 0)))
    elsewhere = "elsewhere:" + uuid.uuid4().hex  # another gateway's keys must survive
    redis_client.set(elsewhere, b"keep")
    try:
        assert await store.clear() == 2
        assert await store.get("a") is None and await store.get("b") is None
        assert redis_client.keys(store.prefix + "*") == []
        assert redis_client.get(elsewhere) == b"keep"
    finally:
        redis_client.delete(elsewhere)
