"""A key that a tenant's key creates, rotates or revokes is never broader than that key (probe 10, finding 1).

Real gateway with auth on, over loopback: the operator restricts a tenant admin's key (models,
limits, expiry); that admin's new keys inherit what the request leaves out, and anything broader is
403 ``key_broader_than_caller`` naming the field. Operator keys stay unbounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from opsgate.auth.key_scope import bound_by_caller, check_revocation
from opsgate.auth.key_store import KeyInfo, KeySpec
from opsgate.domain.errors import PermissionDeniedError
from opsgate.domain.principal import Principal
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

ADMIN_KEY = "bootstrap-admin-key-for-tests-0123456789"
DAY = 86400.0


@dataclass
class Site:
    gateway: Gateway
    restricted: dict[str, Any]  # the operator's restricted admin key for tenant acme (creation response)

    def call(self, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.request(method, self.gateway.url + path, headers=headers, timeout=30, **kwargs)

    def mint(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        return self.call("POST", "/admin/keys", key or self.restricted["secret"], json=body)

    def chat(self, key: str, model: str) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        return self.call("POST", "/v1/chat/completions", key, json=body).status_code


@pytest.fixture(scope="module")
def site(upstream_server: FakeUpstream) -> Iterator[Site]:
    upstream_server.script = Script(content="answer")
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "real-model"}
    gateway = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN_KEY, "cache_ttl_seconds": 30},
            "models": [
                {"name": "alpha", "deployments": [deployment]},
                {"name": "beta", "deployments": [deployment]},
            ],
            "limits": {"enabled": True, "rules": [{"per": "global", "requests_per_minute": 100_000}]},
        }
    )
    restricted = {
        "tenant": "acme",
        "role": "admin",
        "name": "restricted",
        "models": ["alpha"],
        "limits": {"requests_per_minute": 1, "tokens_per_minute": 100_000},
        "expires_in": "1d",
    }
    response = httpx.post(
        gateway.url + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, json=restricted, timeout=30
    )
    assert response.status_code == 201, response.text
    yield Site(gateway, response.json())
    gateway.server.stop()


def _refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("permission_error", "key_broader_than_caller", param)


def test_a_key_minted_without_restrictions_inherits_the_callers(site: Site) -> None:
    response = site.mint({"role": "admin", "name": "minted"})
    assert response.status_code == 201, response.text  # on the old code: 201 with no models, limits, expiry
    minted = response.json()
    assert minted["tenant"] == "acme" and minted["models"] == ["alpha"]
    assert minted["limits"] == {"requests_per_minute": 1, "tokens_per_minute": 100_000}
    assert minted["expires_at"] == site.restricted["expires_at"]
    # And it behaves so: a model the operator did not allow is refused, the rpm of 1 holds.
    assert site.chat(minted["secret"], "beta") == 404  # not its model: as if it did not exist
    assert [site.chat(minted["secret"], "alpha") for _ in range(2)] == [200, 429]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"models": ["alpha", "beta"]}, "models"),
        ({"models": None}, "models"),
        ({"limits": {"requests_per_minute": 2}}, "limits"),
        ({"limits": {"requests_per_minute": None, "concurrent": 5}}, "limits"),
        ({"limits": None}, "limits"),
        ({"limits": {"tokens_per_minute": 100_001}}, "limits"),
        ({"expires_in": "30d"}, "expires_in"),
        ({"expires_at": None}, "expires_at"),
        ({"expires_at": time.time() + 2 * DAY}, "expires_at"),
    ],
)
def test_a_broader_key_is_refused_naming_the_field(site: Site, body: dict[str, Any], param: str) -> None:
    before = {k["id"] for k in site.call("GET", "/admin/keys", ADMIN_KEY).json()["data"]}
    _refused(site.mint({"role": "service", **body}), param)
    after = {k["id"] for k in site.call("GET", "/admin/keys", ADMIN_KEY).json()["data"]}
    assert after == before  # nothing was created


def test_narrower_and_equal_keys_are_created(site: Site) -> None:
    hour = time.time() + 3600
    response = site.mint(
        {"role": "service", "models": ["alpha"], "limits": {"requests_per_minute": 1}, "expires_at": hour}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    # tokens_per_minute, left out of the object, is inherited rather than dropped
    assert created["limits"] == {"requests_per_minute": 1, "tokens_per_minute": 100_000}
    assert created["expires_at"] == pytest.approx(hour) and created["models"] == ["alpha"]
    response = site.mint({"models": [], "limits": {"concurrent": 5}, "expires_in": "1h"})
    assert response.status_code == 201, response.text
    assert response.json()["limits"] == {"concurrent": 5, "requests_per_minute": 1, "tokens_per_minute": 100_000}


def test_an_unrestricted_tenant_admin_and_the_operator_are_not_bounded(site: Site) -> None:
    response = site.mint({"tenant": "acme", "role": "admin", "name": "open-admin"}, key=ADMIN_KEY)
    assert response.status_code == 201, response.text
    open_admin = response.json()["secret"]
    response = site.mint({"role": "developer", "models": ["alpha", "beta"]}, key=open_admin)
    assert response.status_code == 201, response.text
    assert response.json()["limits"] is None and response.json()["expires_at"] is None
    response = site.mint({"role": "developer"}, key=open_admin)
    assert response.status_code == 201 and response.json()["models"] is None


def test_rotation_cannot_broaden_either(site: Site) -> None:
    wide = site.mint({"tenant": "acme", "role": "service", "name": "wide"}, key=ADMIN_KEY).json()
    response = site.call("POST", f"/admin/keys/{wide['id']}/rotate", site.restricted["secret"], json={})
    _refused(response, "models")  # on the old code: 201 and a new secret with every model, no limits
    assert site.call("GET", f"/admin/keys/{wide['id']}", ADMIN_KEY).json()["rotated_to"] is None
    assert site.chat(wide["secret"], "beta") == 200  # not rotated away either
    narrow = site.mint({"role": "service", "name": "narrow"}).json()
    response = site.call("POST", f"/admin/keys/{narrow['id']}/rotate", site.restricted["secret"], json={})
    assert response.status_code == 201, response.text
    assert response.json()["models"] == ["alpha"] and response.json()["limits"] == narrow["limits"]


def test_revocation_cannot_reach_a_broader_key(site: Site) -> None:
    broader = site.mint({"tenant": "acme", "role": "admin", "name": "open-admin-r"}, key=ADMIN_KEY).json()
    restricted = site.restricted["secret"]
    for method, path in (("POST", f"/admin/keys/{broader['id']}/revoke"), ("DELETE", f"/admin/keys/{broader['id']}")):
        _refused(site.call(method, path, restricted), "models")  # on the old code: 200, the operator's admin gone
    assert site.call("GET", f"/admin/keys/{broader['id']}", ADMIN_KEY).json()["state"] == "active"
    assert site.chat(broader["secret"], "beta") == 200
    # A key no broader than the caller, and the caller itself, it may revoke; the operator any.
    narrow = site.mint({"role": "service", "name": "narrow-r"}).json()
    response = site.call("POST", f"/admin/keys/{narrow['id']}/revoke", restricted)
    assert response.status_code == 200 and response.json()["state"] == "revoked"
    response = site.call("DELETE", f"/admin/keys/{broader['id']}", ADMIN_KEY)
    assert response.status_code == 200 and response.json()["state"] == "revoked"
    # Another tenant's key stays "not found", as before.
    other = site.mint({"tenant": "globex", "role": "service"}, key=ADMIN_KEY).json()
    assert site.call("POST", f"/admin/keys/{other['id']}/revoke", restricted).status_code == 404


def test_a_restricted_admin_may_revoke_any_lesser_role_key_of_its_tenant(site: Site) -> None:
    # Probe 2026-12-06 M1: keys the operator made without expiry, model list or limits, with a lesser
    # role, were a 403 key_broader_than_caller for a restricted admin (it could not cut off a leak).
    restricted = site.restricted["secret"]
    for role in ("viewer", "service", "developer"):
        wide = site.mint({"tenant": "acme", "role": role, "name": f"wide-{role}"}, key=ADMIN_KEY).json()
        assert wide["models"] is None and wide["expires_at"] is None
        response = site.call("POST", f"/admin/keys/{wide['id']}/revoke", restricted)
        assert response.status_code == 200, response.text  # on d1c3ccf: 403 naming models
        assert response.json()["state"] == "revoked"
    # The same role with a broader scope stays refused, whichever field is broader.
    for extra in ({"models": ["alpha"], "limits": {"requests_per_minute": 1}}, {"models": ["alpha", "beta"]}):
        admin = site.mint({"tenant": "acme", "role": "admin", **extra}, key=ADMIN_KEY).json()
        response = site.call("POST", f"/admin/keys/{admin['id']}/revoke", restricted)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "key_broader_than_caller"
        assert site.call("GET", f"/admin/keys/{admin['id']}", ADMIN_KEY).json()["state"] == "active"
    # An admin no broader than the caller (it inherits every restriction) may be revoked.
    peer = site.mint({"role": "admin", "name": "peer"}).json()
    assert site.call("POST", f"/admin/keys/{peer['id']}/revoke", restricted).status_code == 200


def test_a_lesser_role_cannot_revoke_a_greater_one() -> None:
    infos = {
        "k_dev": _info("developer", "k_dev"),
        "k_admin": _info("admin", "k_admin"),
        "k_view": _info("viewer", "k_view"),
    }

    class Keys:
        def require(self, key_id: str, tenant: str | None) -> KeyInfo:
            return infos[key_id]

        def get(self, key_id: str, tenant: str | None) -> KeyInfo:
            return infos[key_id]

    principal = Principal(key_id="k_dev", tenant="acme", role="developer")
    with pytest.raises(PermissionDeniedError) as raised:
        check_revocation(Keys(), principal, "k_admin")  # type: ignore[arg-type]
    assert raised.value.param == "role"
    check_revocation(Keys(), principal, "k_view")  # type: ignore[arg-type]


def test_a_revoked_admin_key_cannot_mint_even_while_cached(site: Site) -> None:
    admin = site.mint({"tenant": "acme", "role": "admin", "models": ["alpha"]}, key=ADMIN_KEY).json()
    assert site.mint({"role": "service"}, key=admin["secret"]).status_code == 201  # cached now
    store = site.gateway.app.state.gateway.record_log.store
    with store.connection() as conn, store.transaction(conn):  # revoked behind the auth cache's back
        store.execute(conn, "UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", [time.time(), admin["id"]])
    response = site.mint({"role": "service"}, key=admin["secret"])
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def _info(role: str, key_id: str = "key_x") -> KeyInfo:
    return KeyInfo(key_id, "p", "acme", role, "", None, None, 0.0, None, None, None, None)  # type: ignore[arg-type]


def test_a_role_granting_more_than_the_callers_is_refused() -> None:
    # Only admin may manage keys today, so this cannot be reached over HTTP; the rule holds regardless.
    with pytest.raises(PermissionDeniedError) as raised:
        bound_by_caller(KeySpec(tenant="acme", role="admin"), _info("developer"))
    assert raised.value.param == "role"
    assert bound_by_caller(KeySpec(tenant="acme", role="viewer"), _info("developer")).role == "viewer"
    with pytest.raises(PermissionDeniedError):
        bound_by_caller(KeySpec(tenant="acme", role="service"), _info("viewer"))  # inference is not in read


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [("/v1/models", "sk-not-a-key", 401), ("/v1/models", None, 401), ("/v1/responses", ADMIN_KEY, 404)],
)
def test_a_refused_call_to_the_api_outside_inference_is_recorded(
    site: Site, path: str, key: str | None, status: int
) -> None:
    # /v1/models with a bad key and a route the gateway lacks were answered and never recorded.
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(site.gateway.url + path, headers=headers, timeout=30)
    assert response.status_code == status
    records = site.gateway.records_for(response.headers["x-request-id"])
    assert [(r["endpoint"], r["status"], r["tags"]["path"]) for r in records] == [("http", status, path)]
    assert "sk-not-a-key" not in str(records)
