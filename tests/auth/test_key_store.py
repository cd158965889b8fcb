"""API keys in the real stores (SQLite and PostgreSQL) and the authenticator's cache, revocation and expiry."""

from __future__ import annotations

import asyncio
import time

import pytest

from opsgate.auth.authenticator import Authenticator, presented_key
from opsgate.auth.key_store import KeySpec, KeyStore
from opsgate.auth.secrets import generate_key, key_prefix
from opsgate.domain.auth_config import AuthConfig
from opsgate.domain.errors import AuthenticationError, InvalidRequestError, NotFoundError
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore
from tests.store.conftest import pg_url, store_url  # noqa: F401  (fixtures)


@pytest.fixture()
def keys(store_url: str) -> KeyStore:  # noqa: F811
    return KeyStore(open_store(store_url))


def _all_cells(store: SqlRecordStore) -> str:
    with store.connection() as conn:
        rows = store.execute(conn, "SELECT * FROM api_keys").fetchall()
    return " ".join(str(cell) for row in rows for cell in row)


def test_secret_is_shown_once_and_only_a_salted_hash_is_stored(keys: KeyStore) -> None:
    first = keys.create(KeySpec(tenant="acme", role="developer", name="ci"), "test")
    second = keys.create(KeySpec(tenant="acme", role="developer", name="ci"), "test")
    assert first.secret != second.secret and first.secret.startswith("og_")
    cells = _all_cells(keys.store)
    assert first.secret not in cells and second.secret not in cells
    assert first.secret.split("_", 2)[2] not in cells  # not even the random part (which may hold "_")
    assert first.info.prefix in cells  # the public prefix is the lookup column
    listed = {k["id"]: k for k in (i.to_json() for i in keys.list("acme"))}
    assert listed[first.info.key_id]["key"].startswith("og_" + first.info.prefix)
    assert "secret" not in listed[first.info.key_id]


def test_lookup_checks_the_whole_secret(keys: KeyStore) -> None:
    created = keys.create(KeySpec(tenant="acme", role="service", models=("alpha",)), "test")
    found = keys.lookup(created.secret)
    assert found is not None and found.principal().models == ("alpha",) and found.tenant == "acme"
    forged = created.secret[:-4] + ("AAAA" if not created.secret.endswith("AAAA") else "BBBB")
    assert keys.lookup(forged) is None  # right prefix, wrong secret
    assert keys.lookup("og_notakey") is None and keys.lookup("") is None


def test_list_is_scoped_by_tenant(keys: KeyStore) -> None:
    a = keys.create(KeySpec(tenant="a", role="admin"), "test")
    b = keys.create(KeySpec(tenant="b", role="admin"), "test")
    assert [k.key_id for k in keys.list("a")] == [a.info.key_id]
    assert {k.key_id for k in keys.list(None)} == {a.info.key_id, b.info.key_id}
    assert keys.get(b.info.key_id, tenant_scope="a") is None
    with pytest.raises(NotFoundError):
        keys.revoke(b.info.key_id, "test", tenant_scope="a")
    assert keys.require(b.info.key_id).state() == "active"


def test_revoke_rotate_and_audit(keys: KeyStore) -> None:
    created = keys.create(KeySpec(tenant="a", role="developer"), "alice")
    rotated = keys.rotate(created.info.key_id, "alice", grace_seconds=3600)
    old = keys.require(created.info.key_id)
    assert old.rotated_to == rotated.info.key_id and old.state() == "active"
    assert old.expires_at is not None and 3500 < old.expires_at - time.time() <= 3600
    assert rotated.info.role == "developer" and rotated.info.tenant == "a"
    revoked = keys.revoke(rotated.info.key_id, "alice")
    assert revoked.state() == "revoked" and keys.lookup(rotated.secret) is not None  # lookup sees state
    with pytest.raises(InvalidRequestError):
        keys.rotate(rotated.info.key_id, "alice", 0)
    actions = [e["action"] for e in keys.store.audit_entries(20)]
    assert actions.count("key_create") == 2 and "key_rotate" in actions and "key_revoke" in actions
    revoke_entry = next(e for e in keys.store.audit_entries(20) if e["action"] == "key_revoke")
    assert revoke_entry["actor"] == "alice" and revoke_entry["target"] == rotated.info.key_id
    assert revoke_entry["details"]["before"]["state"] == "active"
    assert revoke_entry["details"]["after"]["state"] == "revoked"


def test_bad_specs_are_refused() -> None:
    with pytest.raises(InvalidRequestError):
        KeySpec(tenant="a", role="root")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        KeySpec(tenant=" ", role="admin")
    with pytest.raises(InvalidRequestError):
        KeySpec(tenant="a", role="admin", expires_at=time.time() - 1)


def test_key_format() -> None:
    new = generate_key()
    assert key_prefix(new.secret) == new.prefix and len(new.secret) == 3 + 10 + 1 + 43
    assert key_prefix("sk-" + new.secret) is None


def test_presented_key_sources() -> None:
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"authorization": "bearer  abc "}) == "abc"
    assert presented_key({"api-key": "k1"}) == "k1"
    assert presented_key({"x-api-key": "k2"}) == "k2"
    assert presented_key({"authorization": "Basic xyz"}) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_authenticator_caches_then_sees_revocation_after_ttl(tmp_path: object) -> None:
    store = open_store(f"sqlite:///{tmp_path}/keys.db")
    keys = KeyStore(store)
    created = keys.create(KeySpec(tenant="a", role="service"), "test")
    clock = FakeClock()
    auth = Authenticator(AuthConfig(enabled=True, cache_ttl_seconds=30, negative_cache_seconds=5), lambda: keys, clock)

    async def run() -> None:
        principal = await auth.authenticate(created.secret)
        assert principal.tenant == "a" and principal.role == "service"
        keys.revoke(created.info.key_id, "test")
        clock.now += 29  # still cached: revocation takes effect within the TTL, as documented
        assert (await auth.authenticate(created.secret)).key_id == created.info.key_id
        clock.now += 2
        with pytest.raises(AuthenticationError):
            await auth.authenticate(created.secret)
        with pytest.raises(AuthenticationError) as missing:
            await auth.authenticate(None)
        assert missing.value.status == 401 and missing.value.code == "missing_api_key"
        assert auth.hits == 1 and auth.misses == 2

    asyncio.run(run())


def test_bootstrap_admin_key_is_an_operator() -> None:
    auth = Authenticator(AuthConfig(enabled=True, admin_key="boot-0123456789"), None)  # type: ignore[arg-type]

    async def run() -> None:
        principal = await auth.authenticate("boot-0123456789")
        assert principal.is_operator and principal.role == "admin"
        with pytest.raises(AuthenticationError):
            await auth.authenticate("boot-012345678")

    asyncio.run(run())
