"""A key's budget cannot be multiplied by rotating it or by minting keys from it (probe-g G4).

Each limit of a key that a tenant key mints is bounded by the caller's, but every minted key used to count
on counters of its own, and a rotation's successor started its counters from zero: a budget-limited tenant
admin spent its daily budget once per key it minted and again after each rotation. Now a successor counts on
its first key's counters and a minted key's requests also reserve on every limited key above it.
Real gateway with auth on, over loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

ADMIN_KEY = "bootstrap-admin-key-for-limit-chain-0123456789"


@pytest.fixture(scope="module")
def gateway(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    upstream_server.script = Script(content="answer")
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "real-model"}
    gateway = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN_KEY, "cache_ttl_seconds": 30},
            "models": [{"name": "alpha", "deployments": [deployment]}],
            "limits": {"enabled": True},
        }
    )
    yield gateway
    gateway.server.stop()


def _call(gateway: Gateway, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.request(method, gateway.url + path, headers=headers, timeout=30, **kwargs)


def _mint(gateway: Gateway, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = _call(gateway, "POST", "/admin/keys", key, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _chat(gateway: Gateway, key: str) -> int:
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
    return _call(gateway, "POST", "/v1/chat/completions", key, json=body).status_code


def _limited_admin(gateway: Gateway, tenant: str, rpm: int) -> dict[str, Any]:
    body = {"tenant": tenant, "role": "admin", "name": "limited", "limits": {"requests_per_minute": rpm}}
    return _mint(gateway, ADMIN_KEY, body)


def test_minted_keys_share_the_minting_keys_budget(gateway: Gateway) -> None:
    admin = _limited_admin(gateway, "chain-share", 3)
    first = _mint(gateway, admin["secret"], {"role": "developer", "name": "one"})
    second = _mint(gateway, admin["secret"], {"role": "developer", "name": "two"})
    assert first["limits"] == {"requests_per_minute": 3} and first["limited_by_keys"] == [admin["id"]]
    # On the old code each minted key had 3 of its own: 200, 200, 200, 200, 200 then the admin's 3 more.
    statuses = [_chat(gateway, first["secret"]), _chat(gateway, first["secret"]), _chat(gateway, second["secret"])]
    assert statuses == [200, 200, 200]
    assert [_chat(gateway, second["secret"]), _chat(gateway, admin["secret"])] == [429, 429]


def test_a_minted_keys_own_lower_limit_still_holds(gateway: Gateway) -> None:
    admin = _limited_admin(gateway, "chain-own", 5)
    narrow = _mint(gateway, admin["secret"], {"role": "service", "limits": {"requests_per_minute": 1}})
    assert [_chat(gateway, narrow["secret"]), _chat(gateway, narrow["secret"])] == [200, 429]
    assert _chat(gateway, admin["secret"]) == 200  # the refused call reserved nothing on the admin's counter


def test_a_rotation_does_not_start_the_budget_again(gateway: Gateway) -> None:
    key = _limited_admin(gateway, "chain-rotate", 2)
    assert [_chat(gateway, key["secret"]), _chat(gateway, key["secret"]), _chat(gateway, key["secret"])] == [
        200,
        200,
        429,
    ]
    rotated = _call(gateway, "POST", f"/admin/keys/{key['id']}/rotate", key["secret"], json={"grace_seconds": 60})
    assert rotated.status_code == 201, rotated.text
    successor = rotated.json()
    assert successor["limits_counted_as"] == key["id"]
    assert _chat(gateway, successor["secret"]) == 429  # on the old code: 200, a fresh budget
    # And a key the successor mints counts against the same counters.
    minted = _mint(gateway, successor["secret"], {"role": "service"})
    assert minted["limited_by_keys"] == [key["id"]]
    assert _chat(gateway, minted["secret"]) == 429


def test_a_chain_of_limited_keys_is_bounded(gateway: Gateway) -> None:
    key = _limited_admin(gateway, "chain-deep", 1000)
    for _ in range(8):
        key = _mint(gateway, key["secret"], {"role": "admin"})
    assert len(key["limited_by_keys"]) == 8
    response = _call(gateway, "POST", "/admin/keys", key["secret"], json={"role": "service"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "limit_chain_too_deep"
    assert _chat(gateway, key["secret"]) == 200  # every key of the chain reserved on (9 checks), admitted


def test_a_rotation_keeps_the_counters_of_a_configured_per_key_rule(upstream: FakeUpstream) -> None:
    # Review: only keys with limits of their own kept their counters through a rotation; a key counted by a
    # configured ``per: key`` rule started again from zero.
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "real-model"}
    gateway = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN_KEY, "cache_ttl_seconds": 30},
            "models": [{"name": "alpha", "deployments": [deployment]}],
            "limits": {"enabled": True, "rules": [{"per": "key", "requests_per_minute": 2}]},
        }
    )
    try:
        key = _mint(gateway, ADMIN_KEY, {"tenant": "chain-config", "role": "admin"})
        assert [_chat(gateway, key["secret"]) for _ in range(3)] == [200, 200, 429]
        rotated = _call(gateway, "POST", f"/admin/keys/{key['id']}/rotate", key["secret"], json={})
        assert rotated.status_code == 201, rotated.text
        assert _chat(gateway, rotated.json()["secret"]) == 429  # before: 200, a fresh minute
    finally:
        gateway.server.stop()
