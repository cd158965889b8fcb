"""The one seam between the cache stage and where entries live (this process, or Redis for replicas)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from opsgate.domain.config import ConfigError
from opsgate.domain.reliability_config import CacheConfig

Vector = npt.NDArray[np.float32]
MAX_VECTORS_PER_BUCKET = 1000  # semantic search is brute force over at most this many recent entries


@dataclass(frozen=True, slots=True)
class SemanticEntry:
    """The embedding of an entry's prompt, filed under its semantic bucket."""

    bucket: str
    vector: Vector


@dataclass(frozen=True, slots=True)
class Match:
    """A semantic search result: the stored answer and how similar its prompt was (cosine)."""

    value: bytes
    score: float


class CacheStore(Protocol):
    """Stores answers (bytes) by key with a TTL, and unit vectors by bucket for semantic search.

    A store never raises because its backend is unreachable: it counts the failure, logs it once and
    behaves as empty, so the cache degrades to misses and never fails a request.
    """

    async def start(self) -> None:
        """Open connections (called at gateway start)."""
        ...

    async def close(self) -> None:
        """Release connections (called at gateway stop)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The stored answer, or None when absent, expired or unreachable."""
        ...

    async def put(self, key: str, value: bytes, ttl: float, semantic: SemanticEntry | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds, and its prompt's vector if given."""
        ...

    async def search(self, bucket: str, vector: Vector, threshold: float) -> Match | None:
        """The most similar live entry of ``bucket`` whose cosine similarity is at least ``threshold``."""
        ...

    async def clear(self) -> int:
        """Drop every entry (an operator's purge); returns how many were dropped."""
        ...

    def status(self) -> dict[str, object]:
        """Counters and sizes, for readiness and metrics."""
        ...


def ranked(matrix: Vector, vector: Vector, threshold: float) -> list[tuple[int, float]]:
    """Rows of ``matrix`` (unit vectors) at least ``threshold`` similar to ``vector``, best first."""
    if matrix.size == 0:
        return []
    scores = matrix @ vector
    hits = np.flatnonzero(scores >= threshold)
    order = hits[np.argsort(-scores[hits], kind="stable")]
    return [(int(i), float(scores[i])) for i in order]


def open_store(config: CacheConfig) -> CacheStore:
    """The store ``config.store`` names: ``memory`` or a ``redis://`` / ``rediss://`` / ``unix://`` URL."""
    if config.store == "memory":
        from opsgate.cache.memory_store import MemoryStore

        return MemoryStore(config.max_bytes)
    if config.store.startswith(("redis://", "rediss://", "unix://")):
        from opsgate.cache.redis_store import RedisStore

        return RedisStore(config.store, prefix=config.key_prefix)
    raise ConfigError([f"cache.store: must be 'memory' or a redis:// URL, not '{config.store}'"])
