"""The in-process store: answers bounded by bytes (least recently used go first), vectors in numpy."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from opsgate.cache.store import MAX_VECTORS_PER_BUCKET, Match, SemanticEntry, Vector, ranked

ENTRY_OVERHEAD = 256  # bytes counted per entry on top of key, answer and vector (dict slots, objects)


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires: float
    size: int
    bucket: str | None = None
    vector_bytes: int = 0


class _Bucket:
    """The vectors of one semantic bucket, oldest first, stacked into a matrix when searched."""

    def __init__(self) -> None:
        self.vectors: OrderedDict[str, Vector] = OrderedDict()
        self._stacked: tuple[list[str], Vector] | None = None

    def add(self, key: str, vector: Vector) -> None:
        self.vectors.pop(key, None)
        self.vectors[key] = vector
        self._stacked = None

    def remove(self, key: str) -> None:
        if self.vectors.pop(key, None) is not None:
            self._stacked = None

    def stacked(self) -> tuple[list[str], Vector]:
        # Rebuilt only after a change; changes happen on misses, which cost a model call anyway.
        if self._stacked is None:
            keys = list(self.vectors)
            self._stacked = (keys, np.stack(list(self.vectors.values())) if keys else np.empty((0, 0), np.float32))
        return self._stacked


class MemoryStore:
    """Entries in one LRU ordered dict bounded by ``max_bytes``; semantic vectors per bucket.

    Sizes count the key, the answer and the vector bytes plus a fixed per-entry overhead, so the
    bound is close to, but not exactly, the memory Python uses.
    """

    def __init__(
        self,
        max_bytes: int,
        max_vectors_per_bucket: int = MAX_VECTORS_PER_BUCKET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_vectors_per_bucket = max_vectors_per_bucket
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}
        self.bytes = 0
        self.evictions = 0
        self.too_large = 0

    async def start(self) -> None:
        """Nothing to open."""

    async def clear(self) -> int:
        """Drop every entry; returns how many there were."""
        count = len(self._entries)
        await self.close()
        return count

    async def close(self) -> None:
        """Drop everything."""
        self._entries.clear()
        self._buckets.clear()
        self.bytes = 0

    async def get(self, key: str) -> bytes | None:
        """The live answer for ``key`` (marking it recently used), or None."""
        entry = self._live(key)
        return entry.value if entry is not None else None

    async def put(self, key: str, value: bytes, ttl: float, semantic: SemanticEntry | None = None) -> None:
        """Store (replacing any old entry), then evict least recently used entries until within bounds."""
        self._remove(key)
        vector_bytes = semantic.vector.nbytes if semantic is not None else 0
        size = len(key) + len(value) + vector_bytes + ENTRY_OVERHEAD
        if size > self.max_bytes:
            self.too_large += 1
            return
        entry = _Entry(value, self._clock() + ttl, size)
        self._entries[key] = entry
        self.bytes += size
        if semantic is not None:
            entry.bucket, entry.vector_bytes = semantic.bucket, vector_bytes
            bucket = self._buckets.setdefault(semantic.bucket, _Bucket())
            bucket.add(key, semantic.vector)
            while len(bucket.vectors) > self.max_vectors_per_bucket:
                oldest = next(iter(bucket.vectors))
                self._drop_vector(oldest)
                bucket.remove(oldest)
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1

    async def search(self, bucket: str, vector: Vector, threshold: float) -> Match | None:
        """Brute-force cosine over the bucket's vectors; the best live entry above ``threshold``."""
        found = self._buckets.get(bucket)
        if found is None:
            return None
        keys, matrix = found.stacked()
        for index, score in ranked(matrix, vector, threshold):
            entry = self._live(keys[index])
            if entry is not None:
                return Match(entry.value, score)
        return None

    def status(self) -> dict[str, object]:
        """Entries, bytes against the bound, evictions, semantic buckets."""
        return {
            "store": "memory",
            "entries": len(self._entries),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "evictions": self.evictions,
            "too_large": self.too_large,
            "semantic_buckets": len(self._buckets),
        }

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry.size
        if entry.bucket is not None:
            self._forget_vector(entry.bucket, key)

    def _drop_vector(self, key: str) -> None:
        """Take an entry out of semantic search (its bucket is full) but keep it for exact hits."""
        entry = self._entries.get(key)
        if entry is None or entry.bucket is None:
            return
        self._forget_vector(entry.bucket, key)
        entry.size -= entry.vector_bytes
        self.bytes -= entry.vector_bytes
        entry.bucket, entry.vector_bytes = None, 0

    def _forget_vector(self, bucket_name: str, key: str) -> None:
        bucket = self._buckets.get(bucket_name)
        if bucket is not None:
            bucket.remove(key)
            if not bucket.vectors:
                del self._buckets[bucket_name]
