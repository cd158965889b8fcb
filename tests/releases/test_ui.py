"""The /ui release pages over real HTTP: states, experiments with the verdict, a prompt's diff (escaped);
experiments are operator-only and a tenant sees only its own prompts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway

ADMIN = "bootstrap-admin-key-for-release-ui-0123456789"


@pytest.fixture(scope="module")
def gateway(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "m"}
    gw = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN},
            "releases": {"poll_seconds": 0.2},
            "models": [{"name": "up", "deployments": [deployment, deployment]}],
        }
    )
    yield gw
    gw.server.stop()


def _call(gw: Gateway, method: str, path: str, key: str = ADMIN, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs)


def test_release_pages(gateway: Gateway) -> None:
    for text in ("Hello <b>there</b>", "Hello <script>alert(1)</script>"):
        body = {"name": "hello", "messages": [{"role": "system", "content": text}]}
        assert _call(gateway, "POST", "/admin/prompts", json=body).status_code in (200, 201)
    first = _call(
        gateway, "POST", "/admin/releases", json={"alias": "up", "deployments": {"up#0": 1}, "activate": True}
    )
    second = _call(gateway, "POST", "/admin/releases", json={"alias": "up", "deployments": {"up#1": 1}}).json()
    assert first.status_code == 201
    state = _call(gateway, "POST", "/admin/releases/up/canary", json={"release": second["id"], "weight": 20}).json()
    for n in range(20):
        body = {"model": "up", "messages": [{"role": "user", "content": "hi"}], "user": f"u{n}"}
        assert _call(gateway, "POST", "/v1/chat/completions", json=body).status_code == 200
    assert gateway.app.state.gateway.record_log.writer.flush()

    page = _call(gateway, "GET", "/ui/releases")
    assert page.status_code == 200 and state["experiment"] in page.text and "hello" in page.text
    experiment = _call(gateway, "GET", f"/ui/experiments/{state['experiment']}")
    assert experiment.status_code == 200, experiment.text
    assert "Verdict" in experiment.text and "canary" in experiment.text and "canary_started" in experiment.text
    prompt = _call(gateway, "GET", "/ui/prompts/hello")
    assert prompt.status_code == 200 and "&lt;script&gt;" in prompt.text and "<script>alert" not in prompt.text
    assert _call(gateway, "GET", "/ui/experiments/exp_0000").status_code == 404
    assert _call(gateway, "GET", "/ui/prompts/NOPE").status_code == 404

    key = _call(gateway, "POST", "/admin/keys", json={"tenant": "t", "role": "admin"}).json()["secret"]
    tenant_page = _call(gateway, "GET", "/ui/releases", key)
    assert tenant_page.status_code == 200 and state["experiment"] not in tenant_page.text
    assert "hello" not in tenant_page.text  # the shared prompts are the operator's page, not a tenant's list
    assert _call(gateway, "GET", f"/ui/experiments/{state['experiment']}", key).status_code == 403
