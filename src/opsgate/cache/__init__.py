"""The response cache's parts: keys, stores (in-process and Redis), semantic embedding, stream replay.

The stage that uses them is ``opsgate.pipeline.cache.CacheStage``.
"""

from opsgate.cache.keys import CacheKeys, SemanticRules, cache_directives, request_keys
from opsgate.cache.memory_store import MemoryStore
from opsgate.cache.store import CacheStore, Match, SemanticEntry, open_store

__all__ = [
    "CacheKeys",
    "CacheStore",
    "Match",
    "MemoryStore",
    "SemanticEntry",
    "SemanticRules",
    "cache_directives",
    "open_store",
    "request_keys",
]
