"""``auth.tenant_admin_rate``: one tenant's admin requests are rate-limited together, per tenant.

An outside probe (eleventh session) looped a tenant admin on key mints (~140/s, each an audit entry that
can never be deleted) and baseline PUTs (~280/s), and a GET flood doubled another tenant's chat latency.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway

ADMIN = "og_adminkey0_admin-throttle-operator-secret"


@pytest.fixture(scope="module")
def gateway(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "m"}
    started = start_gateway(
        {
            "models": [{"name": "up", "deployments": [deployment]}],
            "auth": {
                "enabled": True,
                "admin_key": ADMIN,
                # Slow refill: the test's requests take far less than a token's time.
                "tenant_admin_rate": {
                    "reads_per_second": 0.01,
                    "read_burst": 6,
                    "writes_per_second": 0.01,
                    "write_burst": 3,
                },
            },
        }
    )
    yield started
    started.server.stop()


def _post_key(gateway: Gateway, key: str, tenant: str | None) -> httpx.Response:
    body: dict[str, Any] = {"role": "viewer", **({"tenant": tenant} if tenant else {})}
    return httpx.post(gateway.url + "/admin/keys", json=body, headers={"Authorization": f"Bearer {key}"})


def _tenant_admin(gateway: Gateway, tenant: str) -> str:
    response = httpx.post(
        gateway.url + "/admin/keys",
        json={"tenant": tenant, "role": "admin"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


def test_a_tenants_admin_writes_and_reads_are_limited_together(gateway: Gateway) -> None:
    first, second = _tenant_admin(gateway, "t-busy"), _tenant_admin(gateway, "t-busy")
    # Two keys of one tenant share its bucket: three writes, then 429.
    assert [_post_key(gateway, key, None).status_code for key in (first, second, first)] == [201, 201, 201]
    refused = _post_key(gateway, second, None)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "admin_rate_limited" and error["type"] == "rate_limit_error"
    assert int(refused.headers["Retry-After"]) >= 1
    # Reads have their own bucket.
    reads = [httpx.get(gateway.url + "/admin/keys", headers={"Authorization": f"Bearer {first}"}) for _ in range(7)]
    assert [r.status_code for r in reads] == [200] * 6 + [429]
    # Another tenant and the operator are not held back; inference is not an admin route.
    other = _tenant_admin(gateway, "t-quiet")
    assert _post_key(gateway, other, None).status_code == 201
    assert all(_post_key(gateway, ADMIN, "t-busy").status_code == 201 for _ in range(5))
    chat = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "up", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {first}"},
        timeout=30,
    )
    assert chat.status_code != 429, chat.text
    ready = httpx.get(gateway.url + "/readyz", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert ready["auth"]["tenant_admin_refused"] == 2
