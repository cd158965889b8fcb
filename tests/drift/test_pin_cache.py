"""The pin header with the response cache on: a pinned call is never answered from (nor stored in)
the cache, so a tenant still gets its 403, a bad label its 400, and an operator the answer of the
deployment it pinned (found by an outside probe: the cache answered before the router looked)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.drift.test_sentinel import PROMPTS, GoldenUpstream, sentinel_config
from tests.support import Gateway, start_gateway

ADMIN_KEY = "sk-admin-pin-cache-test-0123456789"
PIN = "x-opsgate-pin-deployment"


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    upstreams = (GoldenUpstream().start(), GoldenUpstream().start())
    config = sentinel_config(f"sqlite:///{tmp_path_factory.mktemp('pin')}/requests.db", upstreams)
    config["auth"] = {"enabled": True, "admin_key": ADMIN_KEY, "cache_ttl_seconds": 30}
    config["cache"] = {"enabled": True}
    gateway = start_gateway(config)
    tenant_key = httpx.post(
        gateway.url + "/admin/keys",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"tenant": "a", "role": "admin", "name": "a-admin"},
        timeout=30,
    ).json()["secret"]
    yield gateway, tenant_key
    gateway.server.stop()
    for upstream in upstreams:
        upstream.stop()


def chat(gateway: Gateway, key: str, pin: str | None) -> httpx.Response:
    body: dict[str, Any] = {"model": "gold", "messages": [{"role": "user", "content": PROMPTS["capital"]}]}
    headers = {"Authorization": f"Bearer {key}", **({PIN: pin} if pin else {})}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)


def test_a_cached_answer_never_hides_the_pin_rules(cached: tuple[Gateway, str]) -> None:
    gateway, tenant_key = cached
    first = chat(gateway, tenant_key, None)
    assert first.status_code == 200 and first.headers["x-opsgate-cache"] == "miss"
    assert chat(gateway, tenant_key, None).headers["x-opsgate-cache"] == "hit"  # the entry is there
    refused = chat(gateway, tenant_key, "gold#1")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "pin_not_allowed"
    unknown = chat(gateway, ADMIN_KEY, "../../etc")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_deployment"
    for label in ("gold#0", "gold#1", "gold#0"):
        pinned = chat(gateway, ADMIN_KEY, label)
        assert pinned.status_code == 200, pinned.text
        assert pinned.headers["x-opsgate-deployment"] == label  # its own deployment, not a cached answer
        assert "x-opsgate-cache" not in pinned.headers
