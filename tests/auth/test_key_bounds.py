"""Key minting cannot grow the store or the audit chain without bound (probe e, p15).

Before: a tenant admin minted keys whose ``models`` filled the 64 KB body, each written whole into
``api_keys`` and the never-pruned audit chain (1,419 keys and 87.8 MB of audit in 10 s on SQLite),
with no cap on keys per tenant and ``GET /admin/keys`` answering every key at once (88 MB). Now:
``models`` names at most 64 distinct configured aliases, a tenant holds at most
``auth.max_keys_per_tenant`` active keys (409 past it), the audit keeps a long list as its count and
digest, and the listing comes in pages. Real gateway over loopback, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.fake_upstream import FakeUpstream
from tests.store.conftest import fresh_pg_schema
from tests.support import Gateway, start_gateway

ADMIN_KEY = "bootstrap-admin-key-for-key-bounds-0123456789"
ALIASES = [f"alias-{i:02d}" for i in range(70)]
CAP = 110


@dataclass
class Site:
    gateway: Gateway

    def call(self, method: str, path: str, key: str = ADMIN_KEY, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.request(method, self.gateway.url + path, headers=headers, timeout=30, **kwargs)

    def mint(self, body: dict[str, Any], key: str = ADMIN_KEY) -> httpx.Response:
        return self.call("POST", "/admin/keys", key, json=body)

    def tenant_admin(self, tenant: str) -> str:
        response = self.mint({"tenant": tenant, "role": "admin", "name": f"{tenant}-admin"})
        assert response.status_code == 201, response.text
        return str(response.json()["secret"])

    def audit_of(self, key_id: str, action: str) -> dict[str, Any]:
        response = self.call("GET", "/admin/audit", params={"limit": 1000})
        assert response.status_code == 200, response.text
        return next(e for e in response.json()["data"] if e["target"] == key_id and e["action"] == action)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, upstream_server: FakeUpstream) -> Iterator[Site]:
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "real-model"}
    config: dict[str, Any] = {
        "auth": {"enabled": True, "admin_key": ADMIN_KEY, "max_keys_per_tenant": CAP},
        "models": [{"name": name, "deployments": [deployment]} for name in ALIASES],
    }
    with fresh_pg_schema("key_bounds") as pg_url:
        if request.param == "postgres":
            config["record"] = {"store": pg_url}
        gateway = start_gateway(config)
        try:
            yield Site(gateway)
        finally:
            gateway.server.stop()


def _refused(response: httpx.Response, status: int, param: str, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


# -- 1. models and tenant are bounded -----------------------------------------------------------------

BAD_MODELS = [
    pytest.param([f"m{i:07d}" for i in range(5600)], id="probe-p15-62KB-of-unknown-names"),
    pytest.param(["alpha-not-configured"], id="unknown-alias"),
    pytest.param(["alias-01", "alias-01"], id="duplicate"),
    pytest.param(["x" * 257], id="entry-over-256-chars"),
    pytest.param([*ALIASES[:65]], id="65-configured-aliases"),
    pytest.param("alias-01", id="not-a-list"),
    pytest.param([""], id="empty-name"),
]


@pytest.mark.parametrize("models", BAD_MODELS)
def test_models_must_be_at_most_64_distinct_configured_aliases(site: Site, models: object) -> None:
    admin = site.tenant_admin("models-t")
    for key in (admin, ADMIN_KEY):  # the tenant admin of the probe, and the operator alike
        _refused(site.mint({"tenant": "models-t", "role": "viewer", "models": models}, key), 400, "models")


def test_64_configured_aliases_and_the_empty_list_are_accepted(site: Site) -> None:
    for models in (ALIASES[:64], [], None):
        response = site.mint({"tenant": "models-ok", "role": "viewer", "models": models})
        assert response.status_code == 201, response.text
        assert response.json()["models"] == models


def test_a_tenant_name_is_bounded(site: Site) -> None:
    _refused(site.mint({"tenant": "t" * 257, "role": "viewer"}), 400, "tenant")
    _refused(site.mint({"tenant": 5, "role": "viewer"}), 400, "tenant")
    _refused(site.mint({"tenant": "t", "role": "viewer", "name": "n" * 201}), 400, "name")


# -- 2. active keys per tenant are capped ---------------------------------------------------------------


def test_a_tenant_past_max_keys_per_tenant_is_a_409_until_it_revokes_one(site: Site) -> None:
    admin = site.tenant_admin("capped")  # counts: it is one of the tenant's active keys
    minted = []
    for _ in range(CAP - 1):
        response = site.mint({"role": "viewer"}, admin)
        assert response.status_code == 201, response.text
        minted.append(response.json()["id"])
    error = _refused(site.mint({"role": "viewer"}, admin), 409, "tenant", "key_limit_reached")
    assert str(CAP) in error["message"] and "max_keys_per_tenant" in error["message"]
    _refused(site.mint({"tenant": "capped", "role": "viewer"}), 409, "tenant", "key_limit_reached")  # operator too
    assert site.tenant_admin("capped-other")  # another tenant is not affected
    assert site.mint({"tenant": None, "role": "admin"}).status_code == 201  # operator keys are not counted

    # A rotation replaces a key: allowed at the cap, once; a second one waits for the grace to lapse.
    rotated = site.call("POST", f"/admin/keys/{minted[0]}/rotate", admin, json={"grace_seconds": 3600})
    assert rotated.status_code == 201, rotated.text
    again = site.call("POST", f"/admin/keys/{minted[1]}/rotate", admin, json={"grace_seconds": 3600})
    _refused(again, 409, "tenant", "key_limit_reached")

    # Revoked keys do not count.
    for key_id in (minted[0], minted[2]):
        assert site.call("POST", f"/admin/keys/{key_id}/revoke", admin).status_code == 200
    assert site.mint({"role": "viewer"}, admin).status_code == 201
    _refused(site.mint({"role": "viewer"}, admin), 409, "tenant", "key_limit_reached")


# -- 3. the audit keeps a bounded summary ----------------------------------------------------------------


def test_the_audit_keeps_a_long_models_list_as_count_and_digest(site: Site) -> None:
    models = ALIASES[:64]
    created = site.mint({"tenant": "audited", "role": "viewer", "models": models})
    assert created.status_code == 201, created.text
    key_id = created.json()["id"]
    digest = hashlib.sha256(orjson.dumps(models)).hexdigest()
    after = site.audit_of(key_id, "key_create")["details"]["after"]
    assert after["models"] == {"count": 64, "sha256": digest}
    assert site.call("GET", f"/admin/keys/{key_id}").json()["models"] == models  # the key itself keeps the list

    assert site.call("POST", f"/admin/keys/{key_id}/revoke").status_code == 200
    revoked = site.audit_of(key_id, "key_revoke")["details"]
    assert revoked["before"]["models"] == revoked["after"]["models"] == {"count": 64, "sha256": digest}
    assert len(orjson.dumps(revoked)) < 4096

    short = site.mint({"tenant": "audited", "role": "viewer", "models": ["alias-03"]}).json()["id"]
    assert site.audit_of(short, "key_create")["details"]["after"]["models"] == ["alias-03"]  # short: as it was
    verify = site.call("GET", "/admin/audit/verify")
    assert verify.status_code == 200 and verify.json()["ok"] is True


# -- 4. the listing is paginated ---------------------------------------------------------------------------


def _walk(site: Site, key: str, limit: int | None) -> tuple[list[dict[str, Any]], int]:
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {} if limit is None else {"limit": limit}
    pages = 0
    while True:
        response = site.call("GET", "/admin/keys", key, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list" and len(body["data"]) <= (limit or 100)
        rows += body["data"]
        pages += 1
        if body["next_cursor"] is None:
            return rows, pages
        params = {**params, "cursor": body["next_cursor"]}


def test_the_listing_comes_in_pages_that_cover_the_tenant_exactly_once(site: Site) -> None:
    admin = site.tenant_admin("paged")
    for i in range(104):
        assert site.mint({"role": "viewer", "name": f"k{i}"}, admin).status_code == 201
    stranger = site.tenant_admin("paged-stranger")

    rows, pages = _walk(site, admin, None)  # the default page: 100
    assert (len(rows), pages) == (105, 2)
    assert len({row["id"] for row in rows}) == 105 and {row["tenant"] for row in rows} == {"paged"}
    assert [row["created_at"] for row in rows] == sorted((row["created_at"] for row in rows), reverse=True)
    small, small_pages = _walk(site, admin, 7)
    assert [row["id"] for row in small] == [row["id"] for row in rows] and small_pages == 15

    # Another tenant's admin, handed this tenant's cursor, still sees only its own keys.
    cursor = site.call("GET", "/admin/keys", admin, params={"limit": 3}).json()["next_cursor"]
    theirs = site.call("GET", "/admin/keys", stranger, params={"cursor": cursor}).json()
    assert {row["tenant"] for row in theirs["data"]} <= {"paged-stranger"}

    _refused(site.call("GET", "/admin/keys", admin, params={"limit": 1001}), 400, "limit")
    _refused(site.call("GET", "/admin/keys", admin, params={"limit": 0}), 400, "limit")
    _refused(site.call("GET", "/admin/keys", admin, params={"cursor": "not-a-cursor"}), 400, "cursor")
    _refused(site.call("GET", "/admin/keys", admin, params={"tenant": "other"}), 400, "tenant")
