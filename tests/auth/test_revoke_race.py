"""A revoke or rotation that lands while a key lookup is in flight holds on this replica at once (probe 10, F4).

The lookup read the row before the revoke; ``forget()`` cleared the cache; then the lookup cached the
stale active key for ``cache_ttl_seconds``. Real gateway with auth on, over loopback; the key store's
lookup is held (deterministically, by an event) between its read and its return.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from opsgate.auth.key_store import KeyInfo, KeyStore
from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway

ADMIN_KEY = "bootstrap-admin-key-for-tests-0123456789"
DEADLINE = 60.0  # generous: a loaded machine


@pytest.fixture(scope="module")
def gateway(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "real-model"}
    started = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN_KEY, "cache_ttl_seconds": 30},
            "models": [{"name": "alpha", "deployments": [deployment]}],
        }
    )
    yield started
    started.server.stop()


class HeldLookup:
    """Wraps the key store so that the next lookup reads its row, then waits for ``release``."""

    def __init__(self, real: Callable[[], KeyStore]) -> None:
        self.real = real
        self.read = threading.Event()  # the row was read (before the revoke)
        self.release = threading.Event()
        self.armed = True

    def __call__(self) -> Any:
        return _Store(self, self.real())


class _Store:
    def __init__(self, hold: HeldLookup, store: KeyStore) -> None:
        self.hold, self.store = hold, store

    def lookup(self, secret: str) -> KeyInfo | None:
        info = self.store.lookup(secret)
        if self.hold.armed:
            self.hold.armed = False
            self.hold.read.set()
            assert self.hold.release.wait(DEADLINE)
        return info


def _call(gateway: Gateway, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.request(method, gateway.url + path, headers=headers, timeout=DEADLINE, **kwargs)


def _race(gateway: Gateway, monkeypatch: pytest.MonkeyPatch, change: Callable[[str], httpx.Response]) -> str:
    """A fresh key's first request held inside its lookup while ``change(key_id)`` runs; returns the secret."""
    created = _call(gateway, "POST", "/admin/keys", ADMIN_KEY, json={"tenant": "acme", "role": "service"}).json()
    authenticator = gateway.app.state.gateway.authenticator
    hold = HeldLookup(authenticator._key_store)
    monkeypatch.setattr(authenticator, "_key_store", hold)
    in_flight: list[int] = []
    request = threading.Thread(
        target=lambda: in_flight.append(_call(gateway, "GET", "/v1/models", created["secret"]).status_code)
    )
    request.start()
    try:
        assert hold.read.wait(DEADLINE), "the lookup never started"
        response = change(created["id"])  # the operator key never reaches the store: it is not held
        assert response.is_success, response.text
    finally:
        hold.release.set()
        request.join(DEADLINE)
    assert in_flight == [200]  # the request already in flight may finish: it began before the change
    return str(created["secret"])


def test_a_revoke_during_a_lookup_holds_at_once(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = _race(
        gateway, monkeypatch, lambda key_id: _call(gateway, "POST", f"/admin/keys/{key_id}/revoke", ADMIN_KEY)
    )
    response = _call(gateway, "GET", "/v1/models", secret)
    assert response.status_code == 401, response.text  # on the old code: 200 for cache_ttl_seconds (30 s)
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_rotation_without_grace_during_a_lookup_holds_at_once(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = _race(
        gateway,
        monkeypatch,
        lambda key_id: _call(gateway, "POST", f"/admin/keys/{key_id}/rotate", ADMIN_KEY, json={"grace_seconds": 0}),
    )
    assert _call(gateway, "GET", "/v1/models", secret).status_code == 401  # old code: 200 for 30 s


def test_lookups_outside_a_change_are_still_cached(gateway: Gateway) -> None:
    created = _call(gateway, "POST", "/admin/keys", ADMIN_KEY, json={"tenant": "acme", "role": "service"}).json()
    authenticator = gateway.app.state.gateway.authenticator
    assert _call(gateway, "GET", "/v1/models", created["secret"]).status_code == 200
    hits = authenticator.hits
    assert _call(gateway, "GET", "/v1/models", created["secret"]).status_code == 200
    assert authenticator.hits > hits
