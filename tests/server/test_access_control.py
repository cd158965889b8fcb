"""Keys, roles and tenant isolation on a real gateway: every /v1, /admin and /ui route, over real HTTP.

Two tenants send requests carrying unique markers; then every route is tried with tenant A's keys
against tenant B's data, and no response may carry B's markers (only 403/404 or A's own data).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from starlette.routing import Route

from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

ADMIN_KEY = "bootstrap-admin-key-for-tests-0123456789"
MARK_A = "marker-tenant-aaa-41"
MARK_B = "marker-tenant-bbb-97"


def auth_config(base_url: str) -> dict[str, Any]:
    deployment = {"type": "openai", "base_url": base_url, "model": "real-model"}
    return {
        "auth": {"enabled": True, "admin_key": ADMIN_KEY, "cache_ttl_seconds": 30},
        "models": [
            {"name": "alpha", "deployments": [deployment]},
            {"name": "beta", "deployments": [deployment]},
        ],
        # On, so the drift and sentinel routes answer with data in the sweep (no model load, no schedule soon).
        "drift": {"enabled": True, "per_tenant": True, "embeddings": False, "interval": "1h"},
        "sentinel": {
            "enabled": True,
            "first_run_seconds": 3600,
            "models": {"alpha": {"prompts": [{"id": "p", "prompt": "hello"}]}},
        },
    }


@dataclass
class Tenants:
    gateway: Gateway
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> creation response
    requests: dict[str, str] = field(default_factory=dict)  # tenant -> one request id
    evals: dict[str, str] = field(default_factory=dict)  # tenant B's eval dataset and run ids

    def secret(self, name: str) -> str:
        return str(self.keys[name]["secret"])

    def call(self, method: str, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.request(method, self.gateway.url + path, headers=headers, timeout=30, **kwargs)

    def chat(self, key: str | None, text: str, model: str = "alpha", user: str = "u") -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": text}], "user": user}
        return self.call("POST", "/v1/chat/completions", key, json=body)


@pytest.fixture(scope="module")
def tenants(upstream_server: FakeUpstream) -> Iterator[Tenants]:
    upstream_server.script = Script(content="answer")
    state = Tenants(start_gateway(auth_config(upstream_server.base_url)))
    for name, tenant, role, models in [
        ("a-admin", "a", "admin", None),
        ("a-dev", "a", "developer", None),
        ("a-viewer", "a", "viewer", None),
        ("a-service", "a", "service", ["alpha"]),
        ("b-admin", "b", "admin", None),
        ("b-dev", "b", "developer", None),
    ]:
        response = state.call(
            "POST", "/admin/keys", ADMIN_KEY, json={"tenant": tenant, "role": role, "name": name, "models": models}
        )
        assert response.status_code == 201, response.text
        state.keys[name] = response.json()
    for tenant, mark in (("a", MARK_A), ("b", MARK_B)):
        response = state.chat(state.secret(f"{tenant}-dev"), f"question {mark}", user=f"user-{mark}")
        assert response.status_code == 200, response.text
        state.requests[tenant] = response.headers["x-request-id"]
    record_log = state.gateway.app.state.gateway.record_log
    assert record_log.writer.flush()
    state.evals = _tenant_b_evals(record_log.store)
    _tenant_b_drift(record_log.store)
    # Tenant B's prompt, named like the {name} the sweep fills in, carrying B's marker in its template.
    prompt = {"name": "availability", "messages": [{"role": "system", "content": MARK_B}], "label": "production"}
    assert state.call("POST", "/admin/prompts", state.secret("b-admin"), json=prompt).status_code == 201
    yield state
    state.gateway.server.stop()


def _tenant_b_drift(store: Any) -> None:
    """A drift check of tenant B's traffic on alpha, carrying B's marker in a moved feature's sentence."""
    from opsgate.drift.history import DriftHistory

    window = {"start": time.time() - 7200, "end": time.time(), "requests": 500, "embedded": 0}
    test = {
        "feature": "prompt_language",
        "label": "Prompt language",
        "side": "input",
        "kind": "categorical",
        "test": "chi2",
        "statistic": 90.0,
        "p_value": 1e-9,
        "p_adjusted": 1e-8,
        "effect": 0.3,
        "effect_name": "total variation distance",
        "drifted": True,
        "summary": f"share of '{MARK_B}' 2% -> 31%",
    }
    result = {
        "alias": "alpha",
        "tenant": "b",
        "checked_at": time.time(),
        "reference": {**window, "kind": "trailing"},
        "current": window,
        "alpha": 0.01,
        "drifted": True,
        "score": 0.3,
        "insufficient": None,
        "tests": [test],
    }
    DriftHistory(store).add(result)


def _tenant_b_evals(store: Any) -> dict[str, str]:
    """Tenant B's evaluation dataset and run, carrying B's marker, for the sweep's {dataset}/{run}."""
    from opsgate.evals.dataset import parse_item
    from opsgate.evals.store import EvalStore, ItemResult

    evals = EvalStore(store)
    version, _ = evals.save_dataset("b", "b-set", [parse_item({"prompt": f"question {MARK_B}", "reference": MARK_B})])
    run = evals.create_run("b", "alpha", dataset_id=version.id)
    evals.write_results(run, "b", "alpha", [ItemResult("000000", 0, "ok", input=MARK_B, output=MARK_B)])
    return {"dataset": version.id, "run": run}


# -- /v1 ------------------------------------------------------------------------------------------


def test_no_key_or_a_bad_key_is_401_and_recorded(tenants: Tenants) -> None:
    missing = tenants.chat(None, "hi")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    bad = tenants.chat("og_aaaaaaaaaa_" + "x" * 43, "hi")
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    (record,) = tenants.gateway.records_for(bad.headers["x-request-id"])
    assert record["status"] == 401 and record["api_key_id"] is None


def test_openai_sdk_with_keys_and_model_scopes(tenants: Tenants) -> None:
    client = openai.OpenAI(base_url=tenants.gateway.base_url, api_key=tenants.secret("a-service"), max_retries=0)
    reply = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content == "answer"
    with pytest.raises(openai.NotFoundError) as denied:  # as if it did not exist: no name confirmed
        client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "hello"}])
    assert denied.value.code == "model_not_found" and "beta' does not exist" in denied.value.message
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-alias", messages=[{"role": "user", "content": "hello"}])
    assert unknown.value.message.replace("no-such-alias", "beta") == denied.value.message
    assert [m.id for m in client.models.list().data] == ["alpha"]  # only what the key may call
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=tenants.gateway.base_url, api_key="wrong", max_retries=0).models.list()


def test_record_carries_tenant_and_key(tenants: Tenants) -> None:
    response = tenants.call("GET", f"/admin/requests/{tenants.requests['a']}", tenants.secret("a-dev"))
    assert response.status_code == 200
    record = response.json()
    assert record["tenant"] == "a" and record["api_key_id"] == tenants.keys["a-dev"]["id"]


def test_roles(tenants: Tenants) -> None:
    assert tenants.chat(tenants.secret("a-viewer"), "hi").status_code == 403  # viewers read, never call
    assert tenants.call("GET", "/admin/requests", tenants.secret("a-viewer")).status_code == 200
    assert tenants.call("GET", "/admin/requests", tenants.secret("a-service")).status_code == 403
    assert tenants.call("GET", "/admin/requests/export", tenants.secret("a-viewer")).status_code == 403
    assert tenants.call("GET", "/admin/keys", tenants.secret("a-dev")).status_code == 403
    assert tenants.call("POST", "/admin/keys", tenants.secret("a-dev"), json={"role": "admin"}).status_code == 403
    # A tenant admin manages its own tenant's keys, cannot mint keys elsewhere or operator keys.
    own = tenants.call("POST", "/admin/keys", tenants.secret("a-admin"), json={"role": "service"})
    assert own.status_code == 201 and own.json()["tenant"] == "a"
    for tenant in ("b", None):
        other = tenants.call("POST", "/admin/keys", tenants.secret("a-admin"), json={"role": "admin", "tenant": tenant})
        assert other.status_code == 403
    # Operator-only actions.
    assert tenants.call("GET", "/admin/audit", tenants.secret("a-admin")).status_code == 403
    assert tenants.call("POST", "/admin/erasure", tenants.secret("a-admin"), json={"user": "x"}).status_code == 403
    assert tenants.call("GET", "/admin/audit", ADMIN_KEY).status_code == 200


def test_bad_key_requests_are_client_errors(tenants: Tenants) -> None:
    admin = tenants.secret("a-admin")
    for body, param in [
        ({"role": "root"}, "role"),
        ({"role": "service", "models": "alpha"}, "models"),
        ({"role": "service", "limits": {"rpm": 1}}, "limits"),
        ({"role": "service", "expires_in": "soon"}, "expires_in"),
        ({"role": "service", "colour": "red"}, "colour"),
    ]:
        response = tenants.call("POST", "/admin/keys", admin, json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param
    assert tenants.call("POST", "/admin/keys", admin, content=b"{nope").status_code == 400
    assert tenants.call("POST", "/admin/keys", admin, content=b"{" + b" " * 70_000 + b"}").status_code == 413


# -- tenant isolation sweep -------------------------------------------------------------------------


def _fill(path: str, tenants: Tenants) -> str:
    b_values = {
        "id": tenants.requests["b"],
        "name": "availability",
        "model": "alpha",
        "alias": "alpha",
        **tenants.evals,
    }
    if path.startswith("/admin/keys/"):
        b_values["id"] = tenants.keys["b-dev"]["id"]
    for name, value in b_values.items():
        path = path.replace("{" + name + "}", value).replace("{" + name + ":path}", value)
    return path


def test_no_route_shows_tenant_b_to_tenant_a(tenants: Tenants) -> None:
    app = tenants.gateway.app
    b_secrets = [tenants.keys["b-dev"]["id"], tenants.keys["b-admin"]["id"], MARK_B, "user-" + MARK_B]
    checked = []
    for route in app.routes:
        if not isinstance(route, Route) or not route.path.startswith(("/admin", "/ui", "/metrics", "/v1")):
            continue
        methods = (route.methods or {"GET"}) - {"HEAD"}
        for method in methods:
            path = _fill(route.path, tenants)
            for key_name in ("a-admin", "a-dev"):
                kwargs: dict[str, Any] = {}
                if method == "POST":
                    kwargs["json"] = {"request_id": tenants.requests["b"], "user": "user-" + MARK_B, "score": 1}
                response = tenants.call(method, path, tenants.secret(key_name), **kwargs)
                body = response.text
                # An id echoed back from the path ("no key with id ...") is not a leak; B's data is.
                leaked = [s for s in b_secrets if s in body and s not in path]
                assert not leaked, f"{method} {path} with {key_name}: {response.status_code} shows {leaked}"
                assert response.status_code < 500, f"{method} {path}: {response.status_code} {body[:200]}"
                checked.append((method, route.path))
    assert ("GET", "/admin/requests/{id}") in checked and ("GET", "/admin/usage") in checked
    assert ("GET", "/admin/evals/runs/{run}/items") in checked
    assert ("GET", "/admin/prompts/{name}") in checked and ("POST", "/admin/releases/{alias}/rollback") in checked
    own_prompt = tenants.call("GET", "/admin/prompts/availability", tenants.secret("b-dev"))
    assert own_prompt.status_code == 200 and MARK_B in own_prompt.text  # B sees its own prompt
    releases = tenants.call("GET", "/admin/releases", tenants.secret("a-admin"))
    assert releases.status_code == 403 and releases.json()["error"]["code"] == "operator_only"
    own_run = tenants.call("GET", f"/admin/evals/runs/{tenants.evals['run']}/items", tenants.secret("b-dev"))
    assert own_run.status_code == 200 and MARK_B in own_run.text  # B sees its own evaluation
    assert ("POST", "/admin/config/reload") in checked  # operator only: a tenant admin gets 403
    assert {("GET", "/admin/drift/checks"), ("GET", "/admin/drift/status"), ("GET", "/ui/drift/{alias:path}")} <= set(
        checked
    )
    assert {("GET", "/admin/sentinel/runs/{run}"), ("POST", "/admin/sentinel/run")} <= set(checked)
    own_drift = tenants.call("GET", "/admin/drift/checks", tenants.secret("b-dev"), params={"alias": "alpha"})
    assert own_drift.status_code == 200 and MARK_B in own_drift.text  # B sees its own drift check
    sentinel = tenants.call("GET", "/admin/sentinel/status", tenants.secret("a-admin"))
    assert sentinel.status_code == 403 and sentinel.json()["error"]["code"] == "operator_only"
    reload = tenants.call("POST", "/admin/config/reload", tenants.secret("a-admin"))
    assert reload.status_code == 403 and reload.json()["error"]["code"] == "operator_only"
    # The same routes do show B's data to B (the sweep is not vacuous).
    own = tenants.call("GET", "/admin/requests", tenants.secret("b-dev"), params={"q": MARK_B})
    assert own.status_code == 200 and MARK_B in own.text
    assert tenants.call("GET", f"/admin/requests/{tenants.requests['b']}", tenants.secret("a-dev")).status_code == 404
    explicit = tenants.call("GET", "/admin/requests", tenants.secret("a-dev"), params={"tenant": "b"})
    assert explicit.status_code == 403
    usage = tenants.call("GET", "/admin/usage", tenants.secret("a-dev"), params={"by": "tenant"})
    assert [row["tenant"] for row in usage.json()["data"]] == ["a"]
    everyone = tenants.call("GET", "/admin/usage", ADMIN_KEY, params={"by": "tenant"})
    assert {row["tenant"] for row in everyone.json()["data"]} >= {"a", "b"}


def test_b_keys_cannot_be_touched_by_a(tenants: Tenants) -> None:
    b_key = tenants.keys["b-dev"]["id"]
    for method, path in [("POST", f"/admin/keys/{b_key}/revoke"), ("POST", f"/admin/keys/{b_key}/rotate")]:
        assert tenants.call(method, path, tenants.secret("a-admin"), json={}).status_code == 404
    assert tenants.call("DELETE", f"/admin/keys/{b_key}", tenants.secret("a-admin")).status_code == 404
    assert tenants.chat(tenants.secret("b-dev"), "still works").status_code == 200


# -- lifecycle over HTTP ----------------------------------------------------------------------------


def test_revoke_takes_effect_on_this_replica_at_once(tenants: Tenants) -> None:
    created = tenants.call("POST", "/admin/keys", tenants.secret("a-admin"), json={"role": "service"}).json()
    assert tenants.chat(created["secret"], "one").status_code == 200
    revoked = tenants.call("POST", f"/admin/keys/{created['id']}/revoke", tenants.secret("a-admin"))
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert tenants.chat(created["secret"], "two").status_code == 401


def test_rotation_keeps_the_old_key_for_the_grace_period(tenants: Tenants) -> None:
    admin = tenants.secret("a-admin")
    created = tenants.call("POST", "/admin/keys", admin, json={"role": "service", "name": "rotating"}).json()
    rotated = tenants.call("POST", f"/admin/keys/{created['id']}/rotate", admin, json={"grace_seconds": 3600})
    assert rotated.status_code == 201 and rotated.json()["secret"] != created["secret"]
    assert tenants.chat(created["secret"], "old").status_code == 200
    assert tenants.chat(rotated.json()["secret"], "new").status_code == 200
    again = tenants.call("POST", f"/admin/keys/{rotated.json()['id']}/rotate", admin, json={"grace_seconds": 0}).json()
    assert tenants.chat(rotated.json()["secret"], "lapsed").status_code == 401
    assert tenants.chat(again["secret"], "newest").status_code == 200


def test_expired_key_stops_working(tenants: Tenants) -> None:
    created = tenants.call(
        "POST", "/admin/keys", tenants.secret("a-admin"), json={"role": "service", "expires_in": "1s"}
    ).json()
    assert tenants.chat(created["secret"], "in time").status_code == 200
    time.sleep(1.1)
    assert tenants.chat(created["secret"], "too late").status_code == 401  # the cache never outlives the key


def test_public_routes_and_readyz(tenants: Tenants) -> None:
    assert tenants.call("GET", "/healthz", None).status_code == 200
    public = tenants.call("GET", "/readyz", None).json()
    assert public["status"] == "ready" and public["deployment_states"] == {"ready": public["deployments_total"]}
    assert "deployments" not in public and "alpha" not in str(public)  # counted, never named
    assert "auth" not in public and "pipeline" not in public  # details need a key
    ready = tenants.call("GET", "/readyz", tenants.secret("a-viewer")).json()
    assert ready["auth"]["enabled"] is True and "auth" in ready["pipeline"]
    assert {state["alias"] for state in ready["deployments"].values()} == {"alpha", "beta"}
    # A key restricted to some aliases sees only their deployments (the others answer as unknown models).
    narrow = tenants.call(
        "POST", "/admin/keys", ADMIN_KEY, json={"tenant": "a", "role": "viewer", "name": "narrow", "models": ["alpha"]}
    ).json()
    restricted = tenants.call("GET", "/readyz", narrow["secret"]).json()
    assert {state["alias"] for state in restricted["deployments"].values()} == {"alpha"}
    assert "pipeline" not in tenants.call("GET", "/readyz", "og_wrongwrong_" + "x" * 43).json()
    # The sentinel's and drift monitor's details are operator-only (as /admin/sentinel/status is).
    operator = tenants.call("GET", "/readyz", ADMIN_KEY).json()
    assert "aliases" in operator["sentinel"] or "lease" in str(operator["sentinel"]), operator["sentinel"]
    assert ready["sentinel"] == {"running": True} and ready["drift"] == {"running": True}
    assert tenants.call("GET", "/admin/requests", None).status_code == 401
    ui = tenants.call("GET", "/ui", None, follow_redirects=False)
    assert ui.status_code == 303 and ui.headers["location"] == "/ui/login"


def test_auth_off_is_loud(upstream_server: FakeUpstream) -> None:
    gateway = start_gateway({"models": auth_config(upstream_server.base_url)["models"]})
    try:
        ready = httpx.get(gateway.url + "/readyz").json()
        assert ready["auth"]["enabled"] is False and "OFF" in ready["auth"]["warning"]
        assert httpx.get(gateway.url + "/admin/requests").status_code == 200
    finally:
        gateway.server.stop()


def test_a_key_carries_its_own_rate_limit(tenants: Tenants) -> None:
    created = tenants.call(
        "POST",
        "/admin/keys",
        tenants.secret("a-admin"),
        json={"role": "service", "limits": {"requests_per_minute": 2}},
    ).json()
    assert created["limits"] == {"requests_per_minute": 2}
    codes = [tenants.chat(created["secret"], f"call {i}").status_code for i in range(3)]
    assert codes == [200, 200, 429]
    assert tenants.chat(tenants.secret("a-dev"), "other keys are not affected").status_code == 200


def test_a_stale_ui_cookie_goes_back_to_login(tenants: Tenants) -> None:
    for value in ("og_aaaaaaaaaa_" + "y" * 43, "y" * 43):
        response = httpx.get(tenants.gateway.url + "/ui", cookies={"opsgate_session": value}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/ui/login"
        assert 'opsgate_session=""' in response.headers["set-cookie"]
    # The cookie of older releases held the key itself: even a valid key there logs nobody in now.
    legacy = httpx.get(tenants.gateway.url + "/ui", cookies={"opsgate_key": ADMIN_KEY}, follow_redirects=False)
    assert legacy.status_code == 303 and legacy.headers["location"] == "/ui/login"
