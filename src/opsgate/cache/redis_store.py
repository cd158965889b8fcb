"""The Redis store: answers shared by every replica; semantic vectors as bytes in one hash per bucket.

Layout under the configured prefix (``opsgate:cache:`` by default):

    {prefix}e:{key}          the answer (JSON bytes), with the entry's TTL (PX)
    {prefix}v:{{bucket}}     hash: entry key → float32 vector bytes
    {prefix}t:{{bucket}}     sorted set: entry key → time added, to keep the newest
                             MAX_VECTORS_PER_BUCKET and drop vectors older than the TTL

The two bucket keys share a hash tag, so the Lua script that trims them also works on Redis Cluster.
When Redis is unreachable every call answers "nothing here" at once: the failure is counted, logged
once per outage, and Redis is not tried again for a second, so an outage costs no latency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from opsgate.cache.store import MAX_VECTORS_PER_BUCKET, Match, SemanticEntry, Vector, ranked
from opsgate.domain.urls import redact_url

log = logging.getLogger("opsgate.cache")

BACKOFF_SECONDS = 1.0
_UNAVAILABLE = (RedisError, OSError, TimeoutError)
_CANDIDATES = 3  # similar entries tried when the best ones have expired

_ADD_VECTOR = """
local now = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
local drop = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if excess > 0 then
  for _, field in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do table.insert(drop, field) end
end
for _, field in ipairs(drop) do
  redis.call('HDEL', KEYS[1], field)
  redis.call('ZREM', KEYS[2], field)
end
local ms = math.ceil(ttl * 1000)
redis.call('PEXPIRE', KEYS[1], ms)
redis.call('PEXPIRE', KEYS[2], ms)
return #drop
"""


def redacted(url: str) -> str:
    """``url`` without its password, for logs (the gateway's one helper, ``domain.urls.redact_url``)."""
    return redact_url(url)


class RedisStore:
    """Cache entries in Redis, shared by replicas; degrades to empty when Redis is unreachable.

    Connect and socket timeouts default to 0.5 s; add ``?socket_timeout=…`` to the URL to change them.
    """

    def __init__(self, url: str, prefix: str = "opsgate:cache:", max_vectors_per_bucket: int = MAX_VECTORS_PER_BUCKET):
        self.url = url
        self.prefix = prefix
        self.max_vectors_per_bucket = max_vectors_per_bucket
        self._redis: aioredis.Redis | None = None
        self._add_vector: Any = None
        self._healthy = True
        self._retry_at = 0.0
        self.errors = 0
        self.skipped = 0

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            # One quick retry covers a pooled connection Redis closed; longer outages are the backoff's job.
            self._redis = aioredis.Redis.from_url(
                self.url,
                socket_connect_timeout=0.5,
                socket_timeout=0.5,
                retry=Retry(NoBackoff(), 1),
            )
            self._add_vector = self._redis.register_script(_ADD_VECTOR)
        return self._redis

    async def start(self) -> None:
        """Connect and check Redis answers; an outage at start is logged, never fatal."""
        await self._guard(self._client().ping, False)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def clear(self) -> int:
        """Delete every key under this store's prefix (SCAN + UNLINK in batches, never KEYS); returns answers dropped.

        Unlike reads, a purge that cannot reach Redis fails loudly: the operator must know it did not happen.
        """
        client = self._client()
        dropped = 0
        batch: list[bytes] = []
        async for name in client.scan_iter(match=f"{self.prefix}*", count=1000):
            batch.append(name)
            if name.startswith(f"{self.prefix}e:".encode()):
                dropped += 1
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
        return dropped

    def entry_key(self, key: str) -> str:
        """The Redis key holding an answer."""
        return f"{self.prefix}e:{key}"

    def bucket_keys(self, bucket: str) -> tuple[str, str]:
        """The Redis keys of a semantic bucket: its vectors hash and its insertion-time sorted set."""
        return f"{self.prefix}v:{{{bucket}}}", f"{self.prefix}t:{{{bucket}}}"

    async def get(self, key: str) -> bytes | None:
        """The answer for ``key``, or None (also when Redis is unreachable)."""
        client = self._client()
        value = await self._guard(lambda: client.get(self.entry_key(key)), None)
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float, semantic: SemanticEntry | None = None) -> None:
        """Store the answer with its TTL, and its vector in the bucket (trimmed to the newest entries)."""
        client = self._client()

        async def write() -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(self.entry_key(key), value, px=max(1, round(ttl * 1000)))
                if semantic is not None:
                    vectors, times = self.bucket_keys(semantic.bucket)
                    args = [key, semantic.vector.astype("<f4").tobytes(), time.time(), ttl, self.max_vectors_per_bucket]
                    await self._add_vector(keys=[vectors, times], args=args, client=pipe)
                await pipe.execute()

        await self._guard(write, None)

    async def search(self, bucket: str, vector: Vector, threshold: float) -> Match | None:
        """Brute-force cosine over the bucket's vectors (at most MAX_VECTORS_PER_BUCKET), best live entry."""
        client = self._client()
        vectors_key, times_key = self.bucket_keys(bucket)
        stored = await self._guard(lambda: client.hgetall(vectors_key), {})
        width = vector.astype("<f4").nbytes
        if not isinstance(stored, dict):
            return None
        fields: list[bytes] = [field for field, raw in stored.items() if isinstance(raw, bytes) and len(raw) == width]
        if not fields:
            return None
        matrix = np.frombuffer(b"".join(stored[f] for f in fields), dtype="<f4").reshape(len(fields), -1)
        stale: list[bytes] = []
        match: Match | None = None
        for index, score in ranked(matrix, vector.astype(np.float32), threshold)[:_CANDIDATES]:
            entry_key = self.entry_key(fields[index].decode())
            value = await self._guard(lambda: client.get(entry_key), None)  # noqa: B023 - awaited at once
            if isinstance(value, bytes):
                match = Match(value, score)
                break
            stale.append(fields[index])
        if stale:  # answers that expired before their vectors were trimmed
            await self._guard(lambda: self._forget(vectors_key, times_key, stale), None)
        return match

    async def _forget(self, vectors_key: str, times_key: str, fields: list[bytes]) -> None:
        async with self._client().pipeline(transaction=False) as pipe:
            pipe.hdel(vectors_key, *fields)
            pipe.zrem(times_key, *fields)
            await pipe.execute()

    def status(self) -> dict[str, object]:
        """Reachability and failure counts."""
        return {
            "store": "redis",
            "url": redacted(self.url),
            "healthy": self._healthy,
            "errors": self.errors,
            "skipped": self.skipped,
        }

    async def _guard(self, operation: Callable[[], Awaitable[object]], default: object) -> object:
        """Run one Redis operation; when Redis is unreachable, count it, log once per outage, back off."""
        if time.monotonic() < self._retry_at:
            self.skipped += 1
            return default
        try:
            result = await operation()
        except _UNAVAILABLE as error:
            self.errors += 1
            self._retry_at = time.monotonic() + BACKOFF_SECONDS
            if self._healthy:
                self._healthy = False
                log.warning(
                    "cache store %s is unreachable (%s: %s); answering without the cache until it returns",
                    redacted(self.url),
                    type(error).__name__,
                    error,
                )
            return default
        if not self._healthy:
            self._healthy = True
            log.warning("cache store %s is reachable again after %d failed calls", redacted(self.url), self.errors)
        return result
