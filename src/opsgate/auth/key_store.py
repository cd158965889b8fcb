"""API keys in the gateway's database (the record store: SQLite or PostgreSQL, table ``api_keys``).

Synchronous SQL: call from a worker thread or the CLI. Every change writes an audit entry naming
the actor. Secrets never touch the database; only a salted hash and the public prefix do.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from opsgate.audit.chain import append_entry, lock_chain
from opsgate.auth.key_fields import audited
from opsgate.auth.secrets import display, generate_key, key_prefix, matches
from opsgate.domain.errors import InvalidRequestError, NotFoundError
from opsgate.domain.principal import ROLES, Principal, Role
from opsgate.domain.reliability_config import LimitRule
from opsgate.store.sql import SqlRecordStore

_COLUMNS = (
    "key_id",
    "prefix",
    "tenant",
    "role",
    "name",
    "models",
    "limits",
    "created_at",
    "created_by",
    "expires_at",
    "revoked_at",
    "rotated_to",
    "limit_counter",
    "limit_chain",
)

# How many limited keys may stand above a key (each minted by the one before): every request checks each.
MAX_LIMIT_CHAIN = 8

# (the key id a limit is counted under, the limit): a key's own, then those of the keys that minted it
LimitLink = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class KeyInfo:
    """A key as listings show it: everything but the secret."""

    key_id: str
    prefix: str
    tenant: str | None
    role: Role
    name: str
    models: tuple[str, ...] | None
    limits: dict[str, Any] | None
    created_at: float
    created_by: str | None
    expires_at: float | None
    revoked_at: float | None
    rotated_to: str | None
    limit_counter: str | None = None
    limit_chain: tuple[LimitLink, ...] = ()

    @property
    def counted_as(self) -> str:
        """The key id this key's own limits are counted under (its first rotation's, else its own)."""
        return self.limit_counter or self.key_id

    def chain_for_minted(self) -> tuple[LimitLink, ...]:
        """The limits a key this key mints is counted against: this key's own (if any), then those above it."""
        own: tuple[LimitLink, ...] = ((self.counted_as, self.limits),) if self.limits else ()
        return own + self.limit_chain

    def state(self, now: float | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        """The caller this key authenticates as."""
        return Principal(
            key_id=self.key_id,
            tenant=self.tenant,
            role=self.role,
            name=self.name,
            models=self.models,
            limits=LimitRule(per="key", **self.limits) if self.limits else None,
            limit_counter=self.limit_counter,
            inherited_limits=tuple((counter, LimitRule(per="key", **rule)) for counter, rule in self.limit_chain),
        )

    def spec(self) -> KeySpec:
        """What this key is for: what a rotation copies onto the new key (its counters included)."""
        return KeySpec(
            tenant=self.tenant,
            role=self.role,
            name=self.name,
            models=self.models,
            limits=self.limits,
            expires_at=self.expires_at,
            limit_counter=self.counted_as,  # a configured per-key rule counts on it too
            limit_chain=self.limit_chain,
        )

    def to_json(self) -> dict[str, Any]:
        """The listing shape (no secret, no hash)."""
        return {
            "id": self.key_id,
            "object": "api_key",
            "key": display(self.prefix),
            "tenant": self.tenant,
            "role": self.role,
            "name": self.name,
            "models": list(self.models) if self.models is not None else None,
            "limits": self.limits,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "rotated_to": self.rotated_to,
            # The keys whose limits this key's requests also count against (its own counted under the first).
            "limits_counted_as": self.counted_as,
            "limited_by_keys": [counter for counter, _ in self.limit_chain],
            "state": self.state(),
        }


@dataclass(frozen=True)
class CreatedKey:
    """A new key: its listing and the secret, which is shown this once."""

    info: KeyInfo
    secret: str

    def to_json(self) -> dict[str, Any]:
        """The creation response: the listing plus ``secret``."""
        return {**self.info.to_json(), "secret": self.secret}


@dataclass(frozen=True)
class KeySpec:
    """What a new key is for."""

    tenant: str | None
    role: Role
    name: str = ""
    models: tuple[str, ...] | None = None
    limits: dict[str, Any] | None = field(default=None)
    expires_at: float | None = None
    limit_counter: str | None = None  # set by a rotation: the old key's counters go on
    limit_chain: tuple[LimitLink, ...] = ()  # set for a key minted by a limited key (``key_scope``)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}.", param="role")
        if self.tenant is not None and not self.tenant.strip():
            raise InvalidRequestError("tenant must be a non-empty name.", param="tenant")
        if self.expires_at is not None and self.expires_at <= time.time():
            raise InvalidRequestError("expires_at is in the past.", param="expires_at")


class KeyNotActive(InvalidRequestError):
    """The key was revoked, has expired or was already rotated: it cannot be rotated (again)."""

    # 409: the key's state conflicts with the change (another admin, or a retried request, got there first).
    status = 409


class KeyLimitReached(InvalidRequestError):
    """The tenant holds as many active keys as ``auth.max_keys_per_tenant`` allows."""

    # 409, not 429: waiting does not help (no rate refills); revoking a key does. Not 403: the caller may.
    status = 409


KeyPage = tuple[list[KeyInfo], tuple[float, str] | None]


class KeyStore:
    """Create, list, rotate, revoke and look up keys."""

    def __init__(self, store: SqlRecordStore) -> None:
        self.store = store

    def _row_info(self, row: Any) -> KeyInfo:
        values = dict(zip(_COLUMNS, row, strict=True))
        models = orjson.loads(values["models"]) if values["models"] else None
        return KeyInfo(
            key_id=values["key_id"],
            prefix=values["prefix"],
            tenant=values["tenant"],
            role=values["role"],
            name=values["name"] or "",
            models=tuple(models) if models is not None else None,
            limits=orjson.loads(values["limits"]) if values["limits"] else None,
            created_at=float(values["created_at"]),
            created_by=values["created_by"],
            expires_at=values["expires_at"],
            revoked_at=values["revoked_at"],
            rotated_to=values["rotated_to"],
            limit_counter=values["limit_counter"],
            limit_chain=tuple((str(c), dict(r)) for c, r in orjson.loads(values["limit_chain"]))
            if values["limit_chain"]
            else (),
        )

    def _read(self, conn: Any, key_id: str, tenant_scope: str | None = None) -> KeyInfo | None:
        row = self.store.execute(
            conn, f"SELECT {','.join(_COLUMNS)} FROM api_keys WHERE key_id = ?", [key_id]
        ).fetchone()
        if row is None:
            return None
        info = self._row_info(row)
        if tenant_scope is not None and info.tenant != tenant_scope:
            return None  # another tenant's key is indistinguishable from a missing one
        return info

    def _require_on(self, conn: Any, key_id: str, tenant_scope: str | None) -> KeyInfo:
        info = self._read(conn, key_id, tenant_scope)
        if info is None:
            raise NotFoundError(f"No API key with id '{key_id}'.", param="id", code="key_not_found")
        return info

    def _check_room(self, conn: Any, tenant: str | None, cap: int | None, replacing: str | None = None) -> None:
        """409 when ``tenant`` already holds ``cap`` active keys (``replacing``, a key being rotated, aside).

        Call with the chain lock held (``_locked``): two creators would both count below the cap.
        """
        if cap is None or tenant is None:  # operator keys: only an operator makes them
            return
        row = self.store.execute(
            conn,
            "SELECT count(*) FROM api_keys WHERE tenant = ? AND revoked_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > ?) AND key_id <> ?",
            [tenant, time.time(), replacing or ""],
        ).fetchone()
        if int(row[0]) >= cap:
            raise KeyLimitReached(
                f"Tenant '{tenant}' already has {int(row[0])} active API keys, the most auth.max_keys_per_tenant "
                f"allows ({cap}); revoke unused keys first.",
                param="tenant",
                code="key_limit_reached",
            )

    def _insert(self, conn: Any, spec: KeySpec, actor: str) -> CreatedKey:
        new = generate_key()
        key_id = "key_" + uuid.uuid4().hex[:20]
        self.store.execute(
            conn,
            "INSERT INTO api_keys (key_id, prefix, salt, hash, tenant, role, name, models, limits, created_at, "
            "created_by, expires_at, limit_counter, limit_chain) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                key_id,
                new.prefix,
                new.salt,
                new.hash,
                spec.tenant,
                spec.role,
                spec.name,
                orjson.dumps(list(spec.models)).decode() if spec.models is not None else None,
                orjson.dumps(spec.limits).decode() if spec.limits else None,
                time.time(),
                actor,
                spec.expires_at,
                spec.limit_counter,
                orjson.dumps([list(link) for link in spec.limit_chain]).decode() if spec.limit_chain else None,
            ],
        )
        info = self._require_on(conn, key_id, None)
        append_entry(self.store, conn, actor, "key_create", key_id, {"after": audited(info.to_json())})
        return CreatedKey(info=info, secret=new.secret)

    # Each change and its audit entry commit together: no key change without its trail.
    #
    # Every change takes the audit chain's lock first, before it reads the row it changes, and holds it to
    # the commit (probe-g G5, G6). One lock order: a revoke that updated the row and then waited for the
    # chain lock, while a rotation held that lock and waited for the row, deadlocked on PostgreSQL (one
    # of them a 500). And one change to a key at a time: each reads the state the previous one committed,
    # so a key is rotated once (concurrent rotations minted several live successors) and a key revoked
    # meanwhile is not rotated at all.

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """A write transaction holding the audit chain's lock (SQLite: BEGIN IMMEDIATE already is one)."""
        with self.store.connection() as conn, self.store.transaction(conn):
            lock_chain(self.store, conn)
            yield conn

    def create(self, spec: KeySpec, actor: str, max_per_tenant: int | None = None) -> CreatedKey:
        """A new key for ``spec``; the only time its secret exists outside the caller's hands.

        ``max_per_tenant``: 409 ``key_limit_reached`` when the tenant already holds that many active keys.
        """
        with self._locked() as conn:
            self._check_room(conn, spec.tenant, max_per_tenant)
            return self._insert(conn, spec, actor)

    def get(self, key_id: str, tenant_scope: str | None = None) -> KeyInfo | None:
        """One key; None when it does not exist or lies outside ``tenant_scope`` (None: any tenant)."""
        with self.store.connection() as conn:
            return self._read(conn, key_id, tenant_scope)

    def list(self, tenant_scope: str | None = None, include_inactive: bool = True) -> list[KeyInfo]:
        """Keys, newest first, of one tenant (``tenant_scope``) or of all."""
        where, params = "", []
        if tenant_scope is not None:
            where, params = " WHERE tenant = ?", [tenant_scope]
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn, f"SELECT {','.join(_COLUMNS)} FROM api_keys{where} ORDER BY created_at DESC", params
            ).fetchall()
        keys = [self._row_info(r) for r in rows]
        return keys if include_inactive else [k for k in keys if k.state() == "active"]

    def page(self, tenant_scope: str | None, limit: int, after: tuple[float, str] | None = None) -> KeyPage:
        """At most ``limit`` keys, newest first, after the (created_at, key_id) ``after``; and the next ``after``."""
        conditions: list[str] = []
        params: list[Any] = []
        if tenant_scope is not None:
            conditions.append("tenant = ?")
            params.append(tenant_scope)
        if after is not None:
            conditions.append("(created_at < ? OR (created_at = ? AND key_id < ?))")
            params += [after[0], after[0], after[1]]
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn,
                f"SELECT {','.join(_COLUMNS)} FROM api_keys{where} ORDER BY created_at DESC, key_id DESC LIMIT ?",
                [*params, limit + 1],
            ).fetchall()
        keys = [self._row_info(r) for r in rows[:limit]]
        more = len(rows) > limit
        return keys, (keys[-1].created_at, keys[-1].key_id) if more else None

    def require(self, key_id: str, tenant_scope: str | None = None) -> KeyInfo:
        """One key, or 404 (also for another tenant's key)."""
        with self.store.connection() as conn:
            return self._require_on(conn, key_id, tenant_scope)

    def revoke(self, key_id: str, actor: str, tenant_scope: str | None = None) -> KeyInfo:
        """Revoke a key now (it stops working within the auth cache TTL)."""
        with self._locked() as conn:
            before = self._require_on(conn, key_id, tenant_scope)
            if before.revoked_at is None:
                self.store.execute(conn, "UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", [time.time(), key_id])
            after = self._require_on(conn, key_id, tenant_scope)
            details = {"before": audited(before.to_json()), "after": audited(after.to_json())}
            append_entry(self.store, conn, actor, "key_revoke", key_id, details)
        return after

    def rotate(
        self,
        key_id: str,
        actor: str,
        grace_seconds: float,
        tenant_scope: str | None = None,
        max_per_tenant: int | None = None,
    ) -> CreatedKey:
        """A new key with the same tenant, role and scopes; the old one keeps working for ``grace_seconds``.

        ``max_per_tenant`` counts the tenant's other active keys (those in a grace period included): the
        key being rotated is being replaced, so a tenant at the cap can still rotate, once per key.

        A key rotates once: a key already rotated (in its grace period), revoked or expired is a 409
        ``key_not_active`` (``KeyNotActive``); rotate its successor instead.
        """
        with self._locked() as conn:
            old = self._require_on(conn, key_id, tenant_scope)  # read under the lock: no change lands meanwhile
            if old.state() != "active":
                raise KeyNotActive(
                    f"API key '{key_id}' is {old.state()}; only an active key can be rotated.", code="key_not_active"
                )
            if old.rotated_to is not None:
                raise KeyNotActive(
                    f"API key '{key_id}' was already rotated to '{old.rotated_to}'; rotate that key instead.",
                    code="key_not_active",
                )
            self._check_room(conn, old.tenant, max_per_tenant, replacing=key_id)
            created = self._insert(conn, old.spec(), actor)
            grace_end = time.time() + grace_seconds
            if old.expires_at is not None:
                grace_end = min(grace_end, old.expires_at)
            self.store.execute(
                conn,
                "UPDATE api_keys SET expires_at = ?, rotated_to = ? WHERE key_id = ?",
                [grace_end, created.info.key_id, key_id],
            )
            after = self._require_on(conn, key_id, tenant_scope)
            details = {"before": audited(old.to_json()), "after": audited(after.to_json())}
            append_entry(self.store, conn, actor, "key_rotate", key_id, details)
        return created

    def lookup(self, secret: str) -> KeyInfo | None:
        """The key ``secret`` belongs to, whatever its state; None for an unknown or malformed key."""
        prefix = key_prefix(secret)
        if prefix is None:
            return None
        with self.store.connection() as conn:
            row = self.store.execute(
                conn, f"SELECT {','.join(_COLUMNS)}, salt, hash FROM api_keys WHERE prefix = ?", [prefix]
            ).fetchone()
        if row is None or not matches(secret, row[-2], row[-1]):
            return None
        return self._row_info(row[:-2])
