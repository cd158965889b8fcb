"""An unknown model's 404 lists only the aliases the caller may call, as ``/v1/models`` does."""

from __future__ import annotations

import httpx

from tests.fake_upstream import FakeUpstream
from tests.support import start_gateway

ADMIN_KEY = "bootstrap-admin-key-for-model-scope-tests"


def test_the_404_for_an_unknown_model_names_only_the_keys_models(upstream: FakeUpstream) -> None:
    # A probe's key restricted to ["m"] read "Available models: m, secret-model-of-other-tenant".
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "real", "breaker": {"enabled": False}}
    gateway = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN_KEY},
            "models": [
                {"name": "m", "deployments": [deployment]},
                {"name": "secret-model-of-other-tenant", "deployments": [deployment]},
            ],
        }
    )
    try:

        def mint(models: list[str] | None) -> dict[str, str]:
            created = httpx.post(
                gateway.url + "/admin/keys",
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                json={"tenant": "a", "role": "service", "name": "k", "models": models},
                timeout=30,
            )
            assert created.status_code == 201, created.text
            return {"Authorization": f"Bearer {created.json()['secret']}"}

        def unknown(headers: dict[str, str]) -> dict[str, str]:
            body = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
            response = httpx.post(gateway.base_url + "/chat/completions", headers=headers, json=body, timeout=30)
            assert response.status_code == 404, response.text
            return dict(response.json()["error"])

        restricted, unrestricted = mint(["m"]), mint(None)
        error = unknown(restricted)
        assert error["param"] == "model" and error["code"] == "model_not_found"
        assert "secret-model-of-other-tenant" not in error["message"]
        assert error["message"].endswith("Available models: m.")
        listed = httpx.get(gateway.base_url + "/models", headers=restricted, timeout=30).json()
        assert [entry["id"] for entry in listed["data"]] == ["m"]
        # A key that may call every alias still gets the whole list.
        assert unknown(unrestricted)["message"].endswith("Available models: m, secret-model-of-other-tenant.")
    finally:
        gateway.server.stop()
