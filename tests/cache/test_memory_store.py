"""The in-process store: TTL, the byte bound with LRU eviction, and the semantic index."""

from __future__ import annotations

import numpy as np

from opsgate.cache.memory_store import ENTRY_OVERHEAD, MemoryStore
from opsgate.cache.store import SemanticEntry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def size(key: str, value: bytes, vector: np.ndarray | None = None) -> int:
    return len(key) + len(value) + (vector.nbytes if vector is not None else 0) + ENTRY_OVERHEAD


async def test_ttl() -> None:
    clock = Clock()
    store = MemoryStore(10_000, clock=clock)
    await store.put("k", b"v", ttl=5)
    clock.now = 4.9
    assert await store.get("k") == b"v"
    clock.now = 5.0
    assert await store.get("k") is None
    assert store.status()["entries"] == 0 and store.bytes == 0


async def test_byte_bound_evicts_least_recently_used() -> None:
    store = MemoryStore(size("a", b"x" * 100) * 2)
    await store.put("a", b"x" * 100, ttl=60)
    await store.put("b", b"y" * 100, ttl=60)
    assert await store.get("a") is not None  # a is now the most recent
    await store.put("c", b"z" * 100, ttl=60)
    assert await store.get("b") is None
    assert await store.get("a") is not None and await store.get("c") is not None
    assert store.evictions == 1 and store.bytes == 2 * size("a", b"x" * 100)


async def test_an_entry_larger_than_the_bound_is_not_stored() -> None:
    store = MemoryStore(100)
    await store.put("big", b"x" * 100, ttl=60)
    assert await store.get("big") is None and store.too_large == 1 and store.bytes == 0


async def test_replacing_an_entry_keeps_the_count_right() -> None:
    store = MemoryStore(10_000)
    await store.put("k", b"one", ttl=60)
    await store.put("k", b"three", ttl=60)
    assert await store.get("k") == b"three" and store.bytes == size("k", b"three")


async def test_semantic_search_finds_the_most_similar_live_entry() -> None:
    clock = Clock()
    store = MemoryStore(100_000, clock=clock)
    await store.put("near", b"near answer", 60, SemanticEntry("b", unit(1, 0.1, 0)))
    await store.put("nearer", b"nearer answer", 10, SemanticEntry("b", unit(1, 0.01, 0)))
    await store.put("far", b"far answer", 60, SemanticEntry("b", unit(0, 1, 0)))
    match = await store.search("b", unit(1, 0, 0), threshold=0.9)
    assert match is not None and match.value == b"nearer answer" and match.score > 0.99
    assert await store.search("other-bucket", unit(1, 0, 0), threshold=0.9) is None
    assert await store.search("b", unit(0, 0, 1), threshold=0.9) is None
    clock.now = 20  # "nearer" expired: the next best above the threshold answers
    match = await store.search("b", unit(1, 0, 0), threshold=0.9)
    assert match is not None and match.value == b"near answer"


async def test_vectors_count_towards_the_bound_and_leave_with_their_entry() -> None:
    vector = unit(1, 2, 3)
    store = MemoryStore(size("a", b"v", vector) * 2)
    await store.put("a", b"v", 60, SemanticEntry("b", vector))
    assert store.bytes == size("a", b"v", vector)
    await store.put("c", b"v", 60, SemanticEntry("b", vector))
    await store.put("d", b"v", 60, SemanticEntry("b", vector))  # evicts a, with its vector
    match = await store.search("b", vector, 0.99)
    assert match is not None and store.evictions == 1
    keys, _ = store._buckets["b"].stacked()
    assert keys == ["c", "d"]


async def test_a_full_bucket_drops_its_oldest_vector_but_keeps_the_entry() -> None:
    store = MemoryStore(100_000, max_vectors_per_bucket=2)
    for key in "abc":
        await store.put(key, key.encode(), 60, SemanticEntry("b", unit(1, 0)))
    keys, matrix = store._buckets["b"].stacked()
    assert keys == ["b", "c"] and matrix.shape == (2, 2)
    assert await store.get("a") == b"a"  # still an exact hit
    assert store.bytes == size("a", b"a") + 2 * size("b", b"b", unit(1, 0))
