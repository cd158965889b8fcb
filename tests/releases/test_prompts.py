"""The prompt registry: sandboxed rendering, declared variables, labels, tenancy — over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.domain.errors import GatewayError
from opsgate.releases.prompts import PromptError, parse_ref
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

ADMIN = "bootstrap-admin-key-for-prompts-0123456789"


def _call(gateway: Gateway, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, gateway.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def gateway(upstream_server: FakeUpstream) -> Iterator[tuple[Gateway, dict[str, str]]]:
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "real-model"}
    gw = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN},
            "models": [{"name": "up", "routing": {"retries": 0}, "deployments": [deployment]}],
        }
    )
    keys = {}
    for tenant in ("a", "b"):
        response = _call(gw, "POST", "/admin/keys", ADMIN, json={"tenant": tenant, "role": "admin"})
        assert response.status_code == 201, response.text
        keys[tenant] = response.json()["secret"]
    yield gw, keys
    gw.server.stop()


def _create(gw: Gateway, key: str, **body: Any) -> httpx.Response:
    return _call(gw, "POST", "/admin/prompts", key, json=body)


def _chat(gw: Gateway, key: str, metadata: dict[str, Any], text: str = "hi") -> httpx.Response:
    body = {"model": "up", "messages": [{"role": "user", "content": text}], "metadata": metadata, "user": "u1"}
    return _call(gw, "POST", "/v1/chat/completions", key, json=body)


def test_prompt_renders_into_the_request_and_the_record_names_its_version(
    gateway: tuple[Gateway, dict[str, str]], upstream: FakeUpstream
) -> None:
    gw, keys = gateway
    upstream.script = Script(content="fine")
    created = _create(
        gw,
        keys["a"],
        name="support",
        messages=[{"role": "system", "content": "You help {{ customer }} with {{ product | upper }}."}],
        variables=["customer", "product"],
        parameters={"temperature": 0.2, "max_tokens": 50},
        label="production",
    )
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    again = _create(
        gw,
        keys["a"],
        name="support",
        messages=[{"role": "system", "content": "You help {{ customer }} with {{ product | upper }}."}],
        variables=["customer", "product"],
        parameters={"temperature": 0.2, "max_tokens": 50},
    )
    assert again.status_code == 200 and again.json()["version"] == 1  # same content: not a new version
    response = _chat(gw, keys["a"], {"prompt": "support@production", "variables": {"customer": "Ada", "product": "db"}})
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "You help Ada with DB."}
    assert sent["messages"][1]["content"] == "hi"
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50
    record = gw.records_for(response.headers["x-request-id"])[0]
    assert record["tags"]["prompt"] == "support" and record["tags"]["prompt_version"] == 1
    # The client's own parameter wins over the prompt's.
    body = {
        "model": "up",
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 1.5,
        "metadata": {"prompt": "support@1", "variables": {"customer": "B", "product": "c"}},
    }
    assert _call(gw, "POST", "/v1/chat/completions", keys["a"], json=body).status_code == 200
    assert upstream.requests[-1]["body"]["temperature"] == 1.5


def test_variables_missing_extra_huge_and_bad_refs_are_400s_naming_them(
    gateway: tuple[Gateway, dict[str, str]],
) -> None:
    gw, keys = gateway
    assert _create(gw, keys["a"], name="greet", messages=[{"role": "system", "content": "Hi {{ who }}"}],
                   variables=["who"], label="production").status_code == 201  # fmt: skip
    cases: list[tuple[dict[str, Any], str]] = [
        ({"prompt": "greet", "variables": {}}, "metadata.variables.who"),
        ({"prompt": "greet", "variables": {"who": "x", "extra": "y"}}, "metadata.variables.extra"),
        ({"prompt": "greet", "variables": {"who": "x" * 40_000}}, "metadata.variables.who"),
        ({"prompt": "Greet@production", "variables": {"who": "x"}}, "metadata.prompt"),
        ({"prompt": "greet@nolabel", "variables": {"who": "x"}}, "metadata.prompt"),
        ({"prompt": "greet@\u00b2", "variables": {"who": "x"}}, "metadata.prompt"),  # a digit to isdigit(): was a 500
        ({"prompt": "greet@\u0661\u00b9", "variables": {"who": "x"}}, "metadata.prompt"),
        ({"prompt": "nope@production"}, "metadata.prompt"),
        ({"prompt": "greet", "variables": "who=x"}, "metadata.variables"),
    ]
    for metadata, param in cases:
        response = _chat(gw, keys["a"], metadata)
        assert 400 <= response.status_code < 500, (metadata, response.text)
        error = response.json()["error"]
        assert error["param"] == param, (metadata, error)
        record = gw.records_for(response.headers["x-request-id"])[0]
        assert record["status"] == response.status_code
    nul = _chat(gw, keys["a"], {"prompt": "greet", "variables": {"who": "a\x00b"}})
    assert nul.status_code == 200  # NUL is text like any other here; the store replaces it when recording


def test_sandbox_refuses_python_internals(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    created = _create(gw, keys["a"], name="evil", messages=[{"role": "system", "content": evil}], label="production")
    assert created.status_code == 201
    response = _chat(gw, keys["a"], {"prompt": "evil"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "prompt_render_failed"
    # A variable's value is data, never template code.
    _create(
        gw,
        keys["a"],
        name="echo",
        messages=[{"role": "user", "content": "{{ v }}"}],
        variables=["v"],
        label="production",
    )
    assert _chat(gw, keys["a"], {"prompt": "echo", "variables": {"v": "{{ 7*7 }}"}}).status_code == 200
    bad = _create(gw, keys["a"], name="broken", messages=[{"role": "system", "content": "{% if %}"}])
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages[0].content"
    weird = _create(
        gw, keys["a"], name="w", messages=[{"role": "system", "content": "x"}], parameters={"temperature": 9}
    )
    assert weird.status_code == 400 and weird.json()["error"]["param"] == "parameters.temperature"


def test_tenants_do_not_see_or_use_each_others_prompts(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    secret = "b-only-marker-5521"
    assert _create(gw, keys["b"], name="private", messages=[{"role": "system", "content": secret}],
                   label="production").status_code == 201  # fmt: skip
    assert secret not in _call(gw, "GET", "/admin/prompts", keys["a"]).text
    assert _call(gw, "GET", "/admin/prompts/private", keys["a"]).status_code == 404
    assert _call(gw, "GET", "/admin/prompts", keys["a"], params={"tenant": "b"}).status_code == 403
    used = _chat(gw, keys["a"], {"prompt": "private"})
    assert used.status_code == 404 and used.json()["error"]["code"] == "prompt_not_found"
    assert _chat(gw, keys["b"], {"prompt": "private"}).status_code == 200
    # Operator prompts are shared: a tenant falls back to them.
    assert (
        _create(gw, ADMIN, name="shared", messages=[{"role": "system", "content": "S"}], label="production").status_code
        == 201
    )
    assert _chat(gw, keys["a"], {"prompt": "shared"}).status_code == 200


def test_label_moves_are_audited_and_diffed(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    for text in ("v1 {{ x }}", "v2 {{ x }}!"):
        _create(gw, keys["a"], name="lab", messages=[{"role": "system", "content": text}], variables=["x"])
    moved = _call(gw, "POST", "/admin/prompts/lab/labels", keys["a"], json={"label": "production", "version": 2})
    assert moved.status_code == 200 and moved.json()["before"] is None
    moved = _call(gw, "POST", "/admin/prompts/lab/labels", keys["a"], json={"label": "production", "version": 1})
    assert moved.json()["before"] == 2
    assert (
        _call(
            gw, "POST", "/admin/prompts/lab/labels", keys["a"], json={"label": "production", "version": 9}
        ).status_code
        == 404
    )
    diff = _call(gw, "GET", "/admin/prompts/lab/diff", keys["a"], params={"from": "1", "to": "2"})
    assert diff.status_code == 200 and "-v1 {{ x }}" in diff.json()["diff"] and "+v2 {{ x }}!" in diff.json()["diff"]
    audit = _call(gw, "GET", "/admin/audit", ADMIN, params={"limit": "200"}).json()["data"]
    moves = [e for e in audit if e["action"] == "prompt_label_moved" and e["target"] == "prompt:a/lab"]
    assert [m["details"]["after"] for m in moves][:2] == [1, 2]


def test_refs_parse() -> None:
    assert parse_ref("a@3") == ("a", 3)
    assert parse_ref("a") == ("a", "production")
    for bad in ("", "@x", "a@B", "a" * 100, 5, "a@\u00b2", "a@1\u00b2"):
        with pytest.raises(PromptError):
            parse_ref(bad)
    assert issubclass(PromptError, GatewayError)
