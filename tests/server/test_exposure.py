"""What a caller without a key can learn: ``/readyz`` is state and counts; credentials in URLs never show.

An upstream ``base_url`` with ``user:password@`` used to appear verbatim in the public ``/readyz``
and in ``GET /admin/deployments`` (any viewer).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import Gateway, start_gateway, wait_until

ADMIN_KEY = "bootstrap-admin-key-for-exposure-tests-0123456789"
PASSWORD = "s3cret-upstream-pw"
UPSTREAM = f"http://proxyuser:{PASSWORD}@127.0.0.1:9/v1"


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    started = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN_KEY},
            "models": [{"name": "up", "deployments": [{"type": "openai", "base_url": UPSTREAM, "model": "m"}]}],
        }
    )
    yield started
    started.server.stop()


def _viewer(gateway: Gateway) -> dict[str, str]:
    created = httpx.post(
        gateway.url + "/admin/keys",
        json={"role": "viewer", "tenant": "t"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['secret']}"}


def test_public_readyz_is_state_and_counts_only(gateway: Gateway) -> None:
    # The record writer opens its store from an idle-priority thread: on a loaded machine the first
    # seconds after start can say "degraded" (store not open yet). Wait for it, then read the shape.
    assert wait_until(lambda: httpx.get(gateway.url + "/readyz").json()["status"] == "ready", timeout=60)
    response = httpx.get(gateway.url + "/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["deployment_states"] == {"ready": 1}
    assert body["deployments_ready"] == 1 and body["deployments_total"] == 1
    assert body["components"]["record"] == "healthy"
    text = response.text
    # Not the alias either: deployment labels name the operator's aliases (counted, never listed).
    for secret in (PASSWORD, "proxyuser", "127.0.0.1", "base_url", "version", "sqlite", "up#0", '"up'):
        assert secret not in text, secret


def test_details_need_a_key_and_never_show_credentials(gateway: Gateway) -> None:
    viewer = _viewer(gateway)
    ready = httpx.get(gateway.url + "/readyz", headers=viewer)
    assert ready.json()["deployments"]["up#0"]["base_url"] == "http://proxyuser:***@127.0.0.1:9/v1"
    deployments = httpx.get(gateway.url + "/admin/deployments", headers=viewer)
    assert deployments.status_code == 200
    assert deployments.json()["data"][0]["base_url"] == "http://proxyuser:***@127.0.0.1:9/v1"
    for response in (ready, deployments):
        assert PASSWORD not in response.text
