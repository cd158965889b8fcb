"""The pin header and the /admin/sentinel API with auth on: who may pin, who may read and run the
sentinel, and what every hostile body gets (a 4xx in the OpenAI error shape, never a 500)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.drift.test_sentinel import PROMPTS, GoldenUpstream, sentinel_config
from tests.support import Gateway, start_gateway, wait_until

ADMIN_KEY = "sk-admin-sentinel-test-0123456789"
PIN = "x-opsgate-pin-deployment"


@dataclass
class Setup:
    gateway: Gateway
    upstreams: tuple[GoldenUpstream, GoldenUpstream]
    keys: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, key: str | None = ADMIN_KEY, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.request(method, self.gateway.url + path, headers=headers, timeout=60, **kwargs)

    def chat(self, key: str | None, pin: str | bytes | None, text: str = PROMPTS["capital"]) -> httpx.Response:
        body = {"model": "gold", "messages": [{"role": "user", "content": text}]}
        return self.call("POST", "/v1/chat/completions", key, json=body, headers={PIN: pin} if pin else {})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    upstreams = (GoldenUpstream().start(), GoldenUpstream().start())
    config = sentinel_config(f"sqlite:///{tmp_path_factory.mktemp('sentinel')}/requests.db", upstreams)
    config["auth"] = {"enabled": True, "admin_key": ADMIN_KEY, "cache_ttl_seconds": 30}
    state = Setup(start_gateway(config), upstreams)
    for name, tenant, role in [
        ("a-admin", "a", "admin"),
        ("a-dev", "a", "developer"),
        ("b-admin", "b", "admin"),
        ("op-service", None, "service"),
        ("op-viewer", None, "viewer"),
    ]:
        response = state.call("POST", "/admin/keys", json={"tenant": tenant, "role": role, "name": name})
        assert response.status_code == 201, response.text
        state.keys[name] = response.json()["secret"]
    yield state
    state.gateway.server.stop()
    for upstream in upstreams:
        upstream.stop()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    return error


# -- the pin header ---------------------------------------------------------------------------------


def test_an_operator_admin_pins_a_deployment(setup: Setup) -> None:
    for label in ("gold#0", "gold#1", "gold#0"):
        for _ in range(5):
            response = setup.chat(ADMIN_KEY, label)
            assert response.status_code == 200, response.text
            assert response.headers["x-opsgate-deployment"] == label


@pytest.mark.parametrize("key_name", ["a-admin", "a-dev", "b-admin", "op-service"])
def test_the_pin_is_refused_to_everyone_else(setup: Setup, key_name: str) -> None:
    before = [len(u.requests) for u in setup.upstreams]
    assert_error(setup.chat(setup.keys[key_name], "gold#1"), 403, "pin_not_allowed")
    assert [len(u.requests) for u in setup.upstreams] == before  # refused before any upstream call
    assert setup.chat(setup.keys[key_name], None).status_code == 200  # the same key without the pin works


def test_an_unknown_or_hostile_pin_is_a_client_error(setup: Setup) -> None:
    for label in ("gold#7", "other#0", "x" * 5000, "GOLD#0", b"gold#0\xe9\xff"):
        error = assert_error(setup.chat(ADMIN_KEY, label), 400, "unknown_deployment")
        assert error["param"] == PIN
        assert len(error["message"]) < 400


def test_a_pinned_call_never_falls_back_and_its_failure_counts(setup: Setup) -> None:
    handles = {h.label: h for h in setup.gateway.app.state.gateway.router.handles["gold"]}
    second = setup.upstreams[1]
    failures = handles["gold#1"].failures
    second.fail = True
    try:
        response = setup.chat(ADMIN_KEY, "gold#1")
        assert response.status_code >= 500, response.text  # not answered by gold#0
        assert response.headers.get("x-opsgate-deployment") != "gold#0"
    finally:
        second.fail = False
    assert handles["gold#1"].failures == failures + 1  # a real upstream failure of that deployment


# -- /admin/sentinel access -------------------------------------------------------------------------

ROUTES = [
    ("GET", "/admin/sentinel/status", None),
    ("GET", "/admin/sentinel/runs", None),
    ("GET", "/admin/sentinel/runs/sen_0123456789abcdef0123", None),
    ("POST", "/admin/sentinel/run", {}),
    ("POST", "/admin/sentinel/baseline", {"alias": "gold"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_tenant_keys_get_operator_only(setup: Setup, method: str, path: str, body: Any) -> None:
    before = [len(u.requests) for u in setup.upstreams]
    for name in ("a-admin", "b-admin", "a-dev"):
        response = setup.call(method, path, setup.keys[name], json=body)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] in ("operator_only", "permission_denied", "role_not_allowed")
    assert_error(setup.call(method, path, None, json=body), 401)
    assert [len(u.requests) for u in setup.upstreams] == before  # nothing ran


def test_an_operator_viewer_reads_but_cannot_run(setup: Setup) -> None:
    assert setup.call("GET", "/admin/sentinel/status", setup.keys["op-viewer"]).status_code == 200
    assert setup.call("POST", "/admin/sentinel/run", setup.keys["op-viewer"], json={}).status_code == 403


def test_runs_with_auth_on_use_the_admin_key_and_show_in_status(setup: Setup) -> None:
    runs = setup.call("POST", "/admin/sentinel/run", json={"alias": "gold"})
    assert runs.status_code == 200, runs.text
    assert {r["status"] for r in runs.json()["data"]} <= {"baseline", "unchanged"}
    assert all(r["failed"] == 0 for r in runs.json()["data"])  # the sentinel's own calls were let in and pinned
    status = setup.call("GET", "/admin/sentinel/status").json()
    assert status["enabled"] and status["aliases"] == {"gold": ["gold#0", "gold#1"]}
    assert status["store"]["runs"] >= 2 and status["schedule"]["next_run"] is not None
    run_id = runs.json()["data"][0]["id"]
    shown = setup.call("GET", f"/admin/sentinel/runs/{run_id}").json()
    assert {i["prompt_id"] for i in shown["items"]} == set(PROMPTS)
    listed = setup.call("GET", "/admin/sentinel/runs", params={"alias": "gold", "deployment": "gold#1"}).json()
    assert listed["data"] and {r["deployment"] for r in listed["data"]} == {"gold#1"}
    readyz = setup.call("GET", "/readyz").json()
    assert readyz["sentinel"]["runs"] >= 2


# -- hostile input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/admin/sentinel/run", {"alias": "gold", "extra": 1}, 400, "unknown_field"),
        ("/admin/sentinel/run", {"alias": 123}, 400, None),
        ("/admin/sentinel/run", {"alias": ["gold"]}, 400, None),
        ("/admin/sentinel/run", {"alias": "g" * 10_000}, 413, None),
        ("/admin/sentinel/run", {"alias": "g" * 300}, 400, None),
        ("/admin/sentinel/run", {"alias": "go\u0000ld"}, 400, None),
        ("/admin/sentinel/run", {"alias": ""}, 400, None),
        ("/admin/sentinel/run", {"alias": "nope"}, 404, "model_not_found"),
        ("/admin/sentinel/run", {"deployment": "gold#9"}, 404, "deployment_not_found"),
        ("/admin/sentinel/run", {"alias": "gold", "deployment": True}, 400, None),
        ("/admin/sentinel/run", [1, 2], 400, "invalid_body"),
        ("/admin/sentinel/run", "gold", 400, "invalid_body"),
        ("/admin/sentinel/baseline", {}, 400, "missing_field"),
        ("/admin/sentinel/baseline", {"alias": None}, 400, "missing_field"),
        ("/admin/sentinel/baseline", {"alias": "gold", "deployment": "gold#0\u0000"}, 400, None),
    ],
)
def test_hostile_bodies_are_client_errors(setup: Setup, path: str, body: Any, status: int, code: str | None) -> None:
    before = [len(u.requests) for u in setup.upstreams]
    assert_error(setup.call("POST", path, json=body), status, code)
    assert [len(u.requests) for u in setup.upstreams] == before


def test_broken_json_and_odd_queries_are_client_errors(setup: Setup) -> None:
    json_headers = {"Content-Type": "application/json"}
    assert_error(setup.call("POST", "/admin/sentinel/run", content=b'{"alias": ', headers=json_headers), 400)
    assert_error(setup.call("POST", "/admin/sentinel/run", content=b"\xff\xfe{}", headers=json_headers), 400)
    bad_surrogate = b'{"alias": "\\ud800"}'
    assert setup.call("POST", "/admin/sentinel/run", content=bad_surrogate, headers=json_headers).status_code in (
        400,
        404,
    )
    for params in ({"limit": "0"}, {"limit": "abc"}, {"limit": "100000000"}, {"limit": "1e3"}, {"changed": "yes"},
                   {"limit": "\u00b2"}, {"limit": "\u0663"},  # '²' and Arabic-Indic 3: isdigit() but not ASCII
                   {"bogus": "1"}, {"limit": " 7"}, {"changed": "True"},
                   {"alias": "a\u0000"}, {"alias": "x" * 500}):  # fmt: skip
        assert_error(setup.call("GET", "/admin/sentinel/runs", params=params), 400)
    for path in ("/admin/sentinel/status", "/admin/sentinel/runs/sen_0123456789abcdef0123"):
        assert_error(setup.call("GET", path, params={"bogus": "1"}), 400)  # unknown parameters are refused
    for run_id in ("nope", "sen_zz", "sen_" + "a" * 60, "sen_0123456789abcdef0123"):
        assert_error(setup.call("GET", f"/admin/sentinel/runs/{run_id}"), 404, "run_not_found")


def test_a_second_run_while_one_is_going_is_refused(setup: Setup) -> None:
    first, _ = setup.upstreams
    first.delay = 3.0
    outcome: dict[str, Any] = {}

    def slow_run() -> None:
        outcome["response"] = setup.call("POST", "/admin/sentinel/run", json={"deployment": "gold#0"})

    thread = threading.Thread(target=slow_run)
    try:
        thread.start()
        sentinel = next(s for s in setup.gateway.app.state.gateway.services if s.name == "sentinel")
        assert wait_until(lambda: sentinel.running, timeout=30)
        assert_error(setup.call("POST", "/admin/sentinel/run", json={}), 409, "sentinel_busy")
    finally:
        thread.join(60)
        first.delay = 0.0
    assert outcome["response"].status_code == 200


def test_without_the_sentinel_the_routes_say_so(tmp_path: Any) -> None:
    gateway = start_gateway(
        {
            "models": [{"name": "m", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                      "model": "x"}]}],
            "record": {"store": f"sqlite:///{tmp_path}/requests.db"},
        }
    )  # fmt: skip
    try:
        status = httpx.get(gateway.url + "/admin/sentinel/status", timeout=30)
        assert status.status_code == 200 and status.json()["enabled"] is False
        assert status.json()["store"]["runs"] == 0
        response = httpx.post(gateway.url + "/admin/sentinel/run", json={}, timeout=30)
        assert_error(response, 409, "sentinel_disabled")
        assert httpx.get(gateway.url + "/admin/sentinel/runs", timeout=30).json()["data"] == []
    finally:
        gateway.server.stop()


def test_the_openapi_entries_cover_the_routes_and_are_valid() -> None:
    """The entries server/openapi.py merges (as release_openapi's): every /admin/sentinel route, valid OpenAPI."""
    import copy

    from openapi_spec_validator import validate

    from opsgate import __version__
    from opsgate.drift import sentinel_openapi
    from opsgate.server.openapi import _op, _with_path_parameters, openapi_document
    from opsgate.server.sentinel_routes import sentinel_routes

    operations = sentinel_openapi.operations(_op)
    documented = {(path, method.upper()) for path, item in operations.items() for method in item}
    registered = {(r.path, m) for r in sentinel_routes(object()) for m in r.methods or () if m != "HEAD"}
    assert documented == registered
    document = copy.deepcopy(openapi_document(__version__))
    document["paths"].update({path: _with_path_parameters(path, item) for path, item in operations.items()})
    document["components"]["schemas"].update(sentinel_openapi.BODIES)
    validate(document)
