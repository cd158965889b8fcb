"""Dashboard login sessions: an opaque random id in the cookie, the state on the server.

The cookie holds ``secrets.token_urlsafe(32)``, never the API key; the store keeps only its SHA-256
with the key id, tenant and times (``auth/session_store.py``). Every request re-checks the key
through the authenticator (cached for ``auth.cache_ttl_seconds`` and dropped by ``forget()``, like
any key lookup), so revoking or rotating a key ends its sessions within that bound, on this replica
at once. A session ends at its absolute lifetime, after ``idle_seconds`` unused, or at logout, which
deletes the row: a copied cookie stops working on every replica (on others within the cache TTL).
A key holds at most ``max_per_key`` sessions: a login past that ends the key's oldest.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeGuard

from opsgate.auth.session_store import SessionRow, SessionStore
from opsgate.domain.auth_config import UiSessionConfig
from opsgate.domain.principal import Principal

COOKIE_NAME = "opsgate_session"
LEGACY_COOKIE_NAME = "opsgate_key"  # held the raw key before sessions; only ever deleted now
# token_urlsafe(32) is 43 characters; anything else, up to the brief's 256, is refused before hashing.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{32,256}")
_MAX_CACHE = 10_000
_BOOTSTRAP_SALT = b"opsgate-ui-session-bootstrap-key"


def valid_session_id(value: str | None) -> TypeGuard[str]:
    """Whether ``value`` could be a session id at all (absent, empty, long, non-ASCII and NUL are not)."""
    return value is not None and _ID_PATTERN.fullmatch(value) is not None


def id_hash(session_id: str) -> str:
    """What the store keeps instead of the id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def bootstrap_check(admin_key: str) -> str:
    """The bootstrap key's ``key_check``: slow to invert, so a weak admin key is not cheap to guess."""
    return hashlib.scrypt(admin_key.encode(), salt=_BOOTSTRAP_SALT, n=2**14, r=8, p=1, dklen=16).hex()


class UiSessions:
    """Create, resolve and end dashboard sessions over a ``SessionStore``."""

    def __init__(
        self,
        config: UiSessionConfig,
        store: SessionStore,
        cache_ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self._cache_ttl = cache_ttl_seconds
        self.clock = clock  # wall time; tests move it
        # id hash -> (row as last seen here, wall time until which it needs no store read)
        self._cache: dict[str, tuple[SessionRow, float]] = {}
        # A row last written to the store this long ago gets its last_seen moved (not on every request).
        self._touch_every = min(60.0, config.idle_seconds / 4)

    async def create(self, principal: Principal, key_check: str | None = None) -> str:
        """A new session for ``principal``; returns the id for the cookie (the only place it exists)."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        row = SessionRow(
            id_hash=id_hash(session_id),
            key_id=principal.key_id or principal.name,
            key_check=key_check,
            tenant=principal.tenant,
            created_at=now,
            last_seen=now,
            expires_at=now + self.config.lifetime_seconds,
        )
        await _in_thread(self.store.sweep, now, self.config.idle_seconds)  # expired rows go at each login
        await _in_thread(self.store.create, row)
        # Bounded per key: repeated logins (a script, a leaked key) cannot grow the table without end.
        for gone in await _in_thread(self.store.trim, row.key_id, self.config.max_per_key):
            self._cache.pop(gone, None)
        return session_id

    async def resolve(self, session_id: str | None) -> SessionRow | None:
        """The live session for the cookie's value, or None (malformed, unknown, expired, idle)."""
        if not valid_session_id(session_id):
            return None
        digest = id_hash(session_id)
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now and self._live(cached[0], now):
            row, until = cached  # the deadline is the first read's: use does not extend it
        else:
            self._cache.pop(digest, None)
            stored = await _in_thread(self.store.get, digest)
            if stored is None:
                return None
            if not self._live(stored, now):
                await self.end_hash(digest)
                return None
            row, until = stored, now + self._cache_ttl
        if now - row.last_seen >= self._touch_every:
            await _in_thread(self.store.touch, digest, now)
            row = row.seen(now)
        self._remember(digest, row, until)
        return row

    async def end(self, session_id: str | None) -> None:
        """Logout: delete the session, so the same cookie is refused from now on."""
        if valid_session_id(session_id):
            await self.end_hash(id_hash(session_id))

    async def end_hash(self, digest: str) -> None:
        """Delete one session by its id hash (here at once; other replicas within the cache TTL)."""
        self._cache.pop(digest, None)
        await _in_thread(self.store.delete, digest)

    def forget(self) -> None:
        """Drop cached sessions (a revocation or rotation on this replica)."""
        self._cache.clear()

    def _live(self, row: SessionRow, now: float) -> bool:
        return now < row.expires_at and now - row.last_seen < self.config.idle_seconds

    def _remember(self, digest: str, row: SessionRow, until: float) -> None:
        if self._cache_ttl <= 0:
            return
        if len(self._cache) >= _MAX_CACHE and digest not in self._cache:
            self._cache.clear()  # bounded; dropping all is rare and safe
        self._cache[digest] = (row, until)

    def status(self) -> dict[str, Any]:
        """For /readyz: the session settings."""
        return {
            "lifetime_seconds": self.config.lifetime_seconds,
            "idle_seconds": self.config.idle_seconds,
            "cached_sessions": len(self._cache),
        }


def same_key_check(stored: str | None, current: str | None) -> bool:
    """Whether a session's ``key_check`` matches the key's now (constant time)."""
    if stored is None or current is None:
        return stored is None and current is None
    return hmac.compare_digest(stored, current)


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    # The store is synchronous SQL: never on the event loop.
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)
