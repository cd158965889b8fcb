"""Presented key → ``Principal``, in microseconds: lookups are cached for ``auth.cache_ttl_seconds``.

A cache miss reads the key store in a worker thread, so the event loop never waits on the database.
Revocation and expiry therefore take effect within the TTL (documented); an expiry that falls inside
the TTL is honoured exactly, because an entry never outlives its key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from opsgate.auth.key_store import KeyInfo, KeyStore
from opsgate.domain.auth_config import AuthConfig
from opsgate.domain.errors import AuthenticationError
from opsgate.domain.principal import Principal

log = logging.getLogger("opsgate.auth")

BOOTSTRAP_KEY_ID = "bootstrap-admin"
BOOTSTRAP_ADMIN = Principal(key_id=BOOTSTRAP_KEY_ID, tenant=None, role="admin", name="bootstrap admin")
_MAX_CACHE = 100_000


def presented_key(headers: Mapping[str, str], cookies: Mapping[str, str] | None = None) -> str | None:
    """The key in ``Authorization: Bearer``, ``api-key``/``x-api-key`` (Azure/Anthropic clients) or the UI cookie."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for name in ("api-key", "x-api-key"):
        value = headers.get(name)
        if value:
            return value.strip()
    if cookies:
        return cookies.get("opsgate_key") or None
    return None


class Authenticator:
    """Resolves keys against the bootstrap admin key and the key store, with a TTL cache."""

    def __init__(
        self,
        config: AuthConfig,
        key_store: Callable[[], KeyStore] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._key_store = key_store
        self._clock = clock
        admin = config.admin_key.get_secret_value() if config.admin_key else None
        self._admin_digest = hashlib.sha256(admin.encode()).digest() if admin else None
        # sha256(secret) → (principal or None for unknown, monotonic expiry)
        self._cache: dict[bytes, tuple[Principal | None, float]] = {}
        # Moved by forget(): a lookup that began before a revoke or rotation must not be cached after it.
        self._generation = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """Whether keys are checked at all."""
        return self.config.enabled

    async def authenticate(self, secret: str | None) -> Principal:
        """The principal for ``secret``, or ``AuthenticationError`` (401)."""
        if not secret:
            raise AuthenticationError("No API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
        digest = hashlib.sha256(secret.encode()).digest()
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return BOOTSTRAP_ADMIN
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            self.hits += 1
            principal = cached[0]
        else:
            self.misses += 1
            principal = await self._resolve(secret, digest, now)
        if principal is None:
            raise AuthenticationError("Invalid API key (unknown, expired or revoked).", code="invalid_api_key")
        return principal

    async def _resolve(self, secret: str, digest: bytes, now: float) -> Principal | None:
        generation = self._generation  # before the read: the row may predate a revoke that lands meanwhile
        info: KeyInfo | None = None
        if self._key_store is not None:
            store = self._key_store
            info = await asyncio.get_running_loop().run_in_executor(None, lambda: store().lookup(secret))
        wall = time.time()
        if info is None or info.state(wall) != "active":
            self._remember(digest, None, now + self.config.negative_cache_seconds, generation)
            return None
        expiry = now + self.config.cache_ttl_seconds
        if info.expires_at is not None:
            expiry = min(expiry, now + (info.expires_at - wall))
        principal = info.principal()
        self._remember(digest, principal, expiry, generation)
        return principal

    def _remember(self, digest: bytes, principal: Principal | None, expiry: float, generation: int) -> None:
        if generation != self._generation:
            return  # forgotten while the lookup ran: its answer may be stale (this request still gets it)
        if len(self._cache) >= _MAX_CACHE:
            # Bounded: a flood of random keys cannot grow memory; dropping everything is rare and safe.
            self._cache.clear()
        self._cache[digest] = (principal, expiry)

    def forget(self) -> None:
        """Drop every cached lookup (this process sees a revocation at once), lookups in flight included."""
        self._generation += 1
        self._cache.clear()

    def status(self) -> dict[str, Any]:
        """For /readyz: whether auth is on, and the cache's effect."""
        if not self.config.enabled:
            return {
                "enabled": False,
                "warning": "authentication is OFF: anyone who reaches this port can call models and read records",
            }
        return {
            "enabled": True,
            "cache_ttl_seconds": self.config.cache_ttl_seconds,
            "cached_keys": len(self._cache),
            "cache_hits": self.hits,
            "cache_misses": self.misses,
        }
