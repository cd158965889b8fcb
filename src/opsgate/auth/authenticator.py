"""Presented key → ``Principal``, in microseconds: lookups are cached for ``auth.cache_ttl_seconds``.

A cache miss reads the key store in a worker thread, so the event loop never waits on the database.
Revocation and expiry therefore take effect within the TTL (documented); an expiry that falls inside
the TTL is honoured exactly, because an entry never outlives its key.

A dashboard session (``auth/ui_sessions.py``) is resolved here too: its key is looked up by id on
each request through the same kind of cache, dropped by the same ``forget()``, so a revoked or
rotated key's sessions end within the same bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from opsgate.auth.admin_throttle import AdminThrottle
from opsgate.auth.key_store import KeyInfo, KeyStore
from opsgate.auth.login_throttle import LoginThrottle
from opsgate.auth.secrets import key_prefix
from opsgate.auth.session_store import MemorySessionStore, SessionRow, SessionStore, SqlSessionStore
from opsgate.auth.ui_sessions import UiSessions, bootstrap_check, same_key_check
from opsgate.domain.auth_config import AuthConfig
from opsgate.domain.errors import AuthenticationError, AuthUnavailableError
from opsgate.domain.principal import Principal

log = logging.getLogger("opsgate.auth")

# While the key store is down, one cache miss this often tries it again (the others are answered stale or
# 503 at once), so an unreachable database costs one request per interval the pool's wait, not every request.
STORE_RETRY_SECONDS = 1.0
# A read trying a down store that has not ended after this long (the pool's wait is 2.5 s) is given up on:
# the next miss tries again (a black-holed connection can hang a read for TCP's whole timeout).
PROBE_GIVE_UP_SECONDS = 5.0
# What a read of the key store raises when the database cannot be reached or used (psycopg_pool's PoolTimeout
# is an OperationalError): the store is down. Anything else is a bug, raised as it is.
STORE_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
    OSError,
)

BOOTSTRAP_KEY_ID = "bootstrap-admin"
BOOTSTRAP_ADMIN = Principal(key_id=BOOTSTRAP_KEY_ID, tenant=None, role="admin", name="bootstrap admin")
_MAX_CACHE = 100_000


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in ``Authorization: Bearer`` or ``api-key``/``x-api-key`` (Azure/Anthropic clients).

    Never a cookie: the dashboard's cookie holds a session id (``auth/ui_sessions.py``), not a key.
    """
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for name in ("api-key", "x-api-key"):
        value = headers.get(name)
        if value:
            return value.strip()
    return None


class Authenticator:
    """Resolves keys against the bootstrap admin key and the key store, with a TTL cache."""

    def __init__(
        self,
        config: AuthConfig,
        key_store: Callable[[], KeyStore] | None,
        clock: Callable[[], float] = time.monotonic,
        sessions: UiSessions | None = None,
    ) -> None:
        self.config = config
        self._key_store = key_store
        self._clock = clock
        admin = config.admin_key.get_secret_value() if config.admin_key else None
        self._admin = admin
        self._admin_digest = hashlib.sha256(admin.encode()).digest() if admin else None
        self._admin_check: str | None = None  # bootstrap_check(admin), computed at the first login
        # sha256(secret) → (principal or None for unknown, monotonic expiry, monotonic end of the key's own life)
        self._cache: dict[bytes, _Entry] = {}
        # key id → the same, for dashboard sessions (apart: a secret can never be taken for an id)
        self._by_id: dict[str, _Entry] = {}
        self._store_down = False  # a read failed and none has succeeded since: misses are answered at once
        self._store_retry_at = 0.0  # monotonic: when the next read may try the store (one at a time)
        self._probe_started: float | None = None  # monotonic: when the read trying a down store began
        self._background: set[asyncio.Task[None]] = set()  # probes a readiness check started
        self.store_failures = 0
        self.served_stale = 0
        self.refused_unavailable = 0
        self.last_store_error: str | None = None
        self.sessions = sessions or UiSessions(config.ui_session, _session_store(key_store), config.cache_ttl_seconds)
        ui = config.ui_session
        self.login_throttle = LoginThrottle(ui.login_max_failures, ui.login_window_seconds)
        self.admin_throttle = AdminThrottle(config.tenant_admin_rate)
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
        if self._key_store is not None and key_prefix(secret) is not None:  # a malformed key is a 401 at once
            store = self._key_store
            try:
                info = await self._read_store(lambda: store().lookup(secret), now)
            except AuthUnavailableError:
                return self._stale(self._cache.get(digest), now)
        wall = time.time()
        if info is None or info.state(wall) != "active":
            self._remember(digest, (None, now + self.config.negative_cache_seconds, now), generation)
            return None
        self._remember(digest, self._entry(info, now, wall), generation)
        return info.principal()

    def _entry(self, info: KeyInfo, now: float, wall: float) -> _Entry:
        """A live key's cache entry: reused for the TTL, never past the key's own expiry (stale or not)."""
        ends = now + (info.expires_at - wall) if info.expires_at is not None else float("inf")
        return info.principal(), min(now + self.config.cache_ttl_seconds, ends), ends

    async def _read_store(self, read: Callable[[], KeyInfo | None], now: float) -> KeyInfo | None:
        """``read`` in a worker thread; ``AuthUnavailableError`` when the store cannot be reached.

        Once a read has failed the store counts as down until one succeeds: every miss meanwhile is answered
        at once (stale or 503), and one read at a time, every ``STORE_RETRY_SECONDS``, finds out whether it
        is back (else each miss would hold a worker thread for the pool's whole wait). Only connection and
        database-state errors mean "down"; anything else (a bug, a row it cannot parse) is raised as it is.
        """
        if self._store_down:
            probing = self._probe_started is not None and now - self._probe_started < PROBE_GIVE_UP_SECONDS
            if now < self._store_retry_at or probing:
                raise AuthUnavailableError()
            self._probe_started = now  # a probe that hangs (a black-holed connection) is given up on later
        read_done = asyncio.get_running_loop().run_in_executor(None, read)
        # The read's end decides the store's state even when the request that started it has left (a client
        # hanging up must not free the probe's place while its read still holds a worker thread).
        read_done.add_done_callback(self._after_read)
        try:
            return await asyncio.shield(read_done)
        except STORE_DOWN_ERRORS as error:
            raise AuthUnavailableError() from error

    def _after_read(self, read_done: asyncio.Future[KeyInfo | None]) -> None:
        """Mark the store down (a connection or database error) or up (a read that worked)."""
        self._probe_started = None
        if read_done.cancelled():
            return
        error = read_done.exception()
        if isinstance(error, STORE_DOWN_ERRORS):
            self.store_failures += 1
            self._store_down = True
            self._store_retry_at = self._clock() + STORE_RETRY_SECONDS
            described = f"{type(error).__name__}: {error}"[:300]
            if described != self.last_store_error:
                log.error("the key store cannot be read (%s): serving recently seen keys only", described)
            self.last_store_error = described
        elif error is None:
            if self._store_down:
                log.warning("the key store can be read again")
            self._store_down = False

    def _stale(self, entry: _Entry | None, now: float) -> Principal | None:
        """The last known principal of a key seen recently enough, while the store is down; else 503."""
        fresh_enough = entry is not None and now - entry[1] <= self.config.stale_if_error_seconds
        if entry is not None and entry[0] is not None and now < entry[2] and fresh_enough:
            self.served_stale += 1
            return entry[0]
        self.refused_unavailable += 1
        raise AuthUnavailableError()

    def _remember(self, digest: bytes, entry: _Entry, generation: int) -> None:
        if generation != self._generation:
            return  # forgotten while the lookup ran: its answer may be stale (this request still gets it)
        if len(self._cache) >= _MAX_CACHE:
            # Bounded: a flood of random keys cannot grow memory; dropping everything is rare and safe.
            self._cache.clear()
        self._cache[digest] = entry

    # -- dashboard sessions -----------------------------------------------------------------------

    async def start_session(self, principal: Principal) -> str:
        """A dashboard session for a principal just authenticated by its key; the cookie's value."""
        check = await self._bootstrap_check() if principal is BOOTSTRAP_ADMIN else None
        return await self.sessions.create(principal, check)

    async def authenticate_session(self, session_id: str | None) -> Principal:
        """The principal of a live dashboard session whose key still works, or ``AuthenticationError``."""
        if self._store_down:  # sessions live in the key store's database: down with it, answered at once
            self.refused_unavailable += 1
            raise AuthUnavailableError()
        try:
            row = await self.sessions.resolve(session_id)
        except STORE_DOWN_ERRORS as error:
            self.refused_unavailable += 1
            raise AuthUnavailableError() from error
        principal = await self._session_principal(row) if row is not None else None
        if principal is None:
            if row is not None:
                with contextlib.suppress(*STORE_DOWN_ERRORS):  # ends on its own (idle, expiry) if not here
                    await self.sessions.end_hash(row.id_hash)  # its key was revoked, rotated or expired
            raise AuthenticationError(
                "No valid dashboard session (ended, expired or its key revoked): log in again.", code="invalid_session"
            )
        return principal

    async def _session_principal(self, row: SessionRow) -> Principal | None:
        if row.key_id == BOOTSTRAP_KEY_ID:
            if self._admin is None:
                return None
            return BOOTSTRAP_ADMIN if same_key_check(row.key_check, await self._bootstrap_check()) else None
        now = self._clock()
        cached = self._by_id.get(row.key_id)
        if cached is not None and cached[1] > now:
            self.hits += 1
            principal = cached[0]
        else:
            self.misses += 1
            principal = await self._resolve_id(row.key_id, now)
        if principal is None or principal.tenant != row.tenant:
            return None
        return principal

    async def _resolve_id(self, key_id: str, now: float) -> Principal | None:
        generation = self._generation
        info: KeyInfo | None = None
        if self._key_store is not None:
            store = self._key_store
            try:
                info = await self._read_store(lambda: store().get(key_id), now)
            except AuthUnavailableError:
                return self._stale(self._by_id.get(key_id), now)
        wall = time.time()
        # A rotated key's sessions end at the rotation, not at the end of the old key's grace period.
        if info is None or info.state(wall) != "active" or info.rotated_to is not None:
            entry: _Entry = (None, now + self.config.negative_cache_seconds, now)
        else:
            entry = self._entry(info, now, wall)
        if generation == self._generation:
            if len(self._by_id) >= _MAX_CACHE:
                self._by_id.clear()
            self._by_id[key_id] = entry
        return entry[0]

    async def _bootstrap_check(self) -> str | None:
        if self._admin is None:
            return None
        if self._admin_check is None:
            admin = self._admin
            self._admin_check = await asyncio.get_running_loop().run_in_executor(None, bootstrap_check, admin)
        return self._admin_check

    def forget(self) -> None:
        """Drop every cached lookup (this process sees a revocation at once), lookups in flight included."""
        self._generation += 1
        self._cache.clear()
        self._by_id.clear()
        self.sessions.forget()

    def _key_store_state(self) -> str:
        """``ok``, or ``unhealthy`` while down; a readiness check then tries the store in the background when a
        probe is due, so a replica serving only cache hits does not report a recovered store as down forever."""
        if not self._store_down:
            return "ok"
        store = self._key_store
        if store is not None and self._clock() >= self._store_retry_at and self._probe_started is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to probe with
                task = asyncio.get_running_loop().create_task(self._probe(store))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return "unhealthy"

    async def _probe(self, store: Callable[[], KeyStore]) -> None:
        with contextlib.suppress(AuthUnavailableError, *STORE_DOWN_ERRORS):
            await self._read_store(lambda: store().get("probe"), self._clock())

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
            # The key store: "unhealthy" while its reads fail (recently seen keys are served meanwhile).
            "key_store": self._key_store_state(),
            "key_store_failures": self.store_failures,
            "served_stale": self.served_stale,
            "refused_unavailable": self.refused_unavailable,
            "last_store_error": self.last_store_error,
            "dashboard_logins": self.login_throttle.status(),
            "tenant_admin_refused": self.admin_throttle.refused_total,
        }


# (principal, or None for a key known to be invalid; monotonic time the entry is fresh until; monotonic time the
# key itself stops working, past which it is never served, not even stale)
_Entry = tuple[Principal | None, float, float]


def _session_store(key_store: Callable[[], KeyStore] | None) -> SessionStore:
    # Sessions live where keys do, so every replica shares them; without a database, in this process.
    if key_store is None:
        return MemorySessionStore()
    opener = key_store
    return SqlSessionStore(lambda: opener().store)
