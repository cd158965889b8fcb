"""``/admin/drift`` over real HTTP with keys: tenant scoping, roles, hostile bodies and params as 4xx."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.drift.history import DriftHistory
from opsgate.drift.windows import WindowStore
from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway, wait_until

ADMIN = "bootstrap-admin-key-for-drift-0123456789"


@pytest.fixture(scope="module")
def gateway(upstream_server: FakeUpstream) -> Iterator[tuple[Gateway, dict[str, str]]]:
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "m"}
    gw = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN},
            "models": [{"name": "alpha", "deployments": [deployment]}],
            # Tests here run checks as one tenant back to back: no interval (its own test below has one).
            "drift": {
                "enabled": True,
                "embeddings": False,
                "interval": "1h",
                "per_tenant": True,
                "manual_check_interval": 0,
            },
        }
    )
    keys = {"op": ADMIN}
    for name, tenant, role in [("a-dev", "a", "developer"), ("a-admin", "a", "admin"), ("b-admin", "b", "admin")]:
        response = httpx.post(
            gw.url + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"}, json={"tenant": tenant, "role": role}
        )
        keys[name] = response.json()["secret"]
    history = DriftHistory(gw.app.state.gateway.record_log.store)
    for i, tenant in enumerate([None, "a", "b"]):
        history.add(
            {
                "alias": "alpha",
                "tenant": tenant,
                "checked_at": 1000.0 + i,
                "drifted": tenant == "b",
                "score": 0.5 if tenant == "b" else 0.0,
                "insufficient": None,
                "tests": [{"feature": "prompt_language", "summary": f"secret of {tenant}", "drifted": tenant == "b"}],
            }
        )
    yield gw, keys
    gw.server.stop()


def call(gw: Gateway, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kwargs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return dict(body["error"])


def test_tenant_a_never_sees_tenant_b(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    mine = call(gw, "GET", "/admin/drift/checks", keys["a-dev"]).json()["data"]
    assert [r["tenant"] for r in mine] == ["a"]
    assert "secret of b" not in str(mine) and "secret of None" not in str(mine)
    assert call(gw, "GET", "/admin/drift/checks", keys["a-dev"], params={"tenant": "b"}).status_code == 403
    status = call(gw, "GET", "/admin/drift/status", keys["a-dev"]).json()
    assert [r["tenant"] for r in status["data"]] == ["a"] and "monitor" not in status
    everything = call(gw, "GET", "/admin/drift/checks", keys["op"]).json()["data"]
    assert [r["tenant"] for r in everything] == ["b", "a", None]
    op_status = call(gw, "GET", "/admin/drift/status", keys["op"]).json()
    assert len(op_status["data"]) == 3 and op_status["monitor"]["collector"]["replica"]
    drifted = call(gw, "GET", "/admin/drift/checks", keys["op"], params={"drifted": "true"}).json()["data"]
    assert [r["tenant"] for r in drifted] == ["b"]


def test_checks_run_in_the_callers_scope(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    assert (
        call(gw, "POST", "/admin/drift/check", keys["a-dev"], json={"alias": "alpha"}).status_code == 403
    )  # read only
    own = call(gw, "POST", "/admin/drift/check", keys["a-admin"], json={"alias": "alpha"})
    assert own.status_code == 200, own.text
    assert own.json()["tenant"] == "a" and own.json()["insufficient"].startswith("current window has 0 requests")
    other = call(gw, "POST", "/admin/drift/check", keys["a-admin"], json={"alias": "alpha", "tenant": "b"})
    assert other.status_code == 403 and error_of(other)["code"] == "tenant_denied"
    assert call(gw, "GET", "/admin/drift/checks", keys["b-admin"]).json()["data"][0]["tenant"] == "b"
    glob = call(
        gw, "POST", "/admin/drift/check", keys["op"], json={"alias": "alpha", "current": {"start": 10, "end": 20}}
    )
    assert glob.status_code == 200 and glob.json()["tenant"] is None and glob.json()["current"]["start"] == 10


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "alias"),
        ({"alias": "a\x00b"}, "alias"),
        ({"alias": "x" * 201}, "alias"),
        ({"alias": "alpha", "extra": 1}, "extra"),
        ({"alias": "alpha", "current": {"start": 20, "end": 10}}, "current"),
        ({"alias": "alpha", "current": {"start": "0", "end": 10}}, "current.start"),
        ({"alias": "alpha", "current": {"start": -1, "end": 10}}, "current.start"),
        ({"alias": "alpha", "current": {"start": 0, "end": 1e300}}, "current.end"),
        ({"alias": "alpha", "current": {"start": True, "end": 10}}, "current.start"),
        ({"alias": 5}, "alias"),
        ({"alias": "alpha", "current": {"start": 0, "end": 100}, "reference": {"start": 50, "end": 150}}, "current"),
    ],
)
def test_hostile_check_bodies_are_400(gateway: tuple[Gateway, dict[str, str]], body: Any, param: str) -> None:
    gw, keys = gateway
    response = call(gw, "POST", "/admin/drift/check", keys["op"], json=body)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param


@pytest.mark.parametrize(
    "raw",
    [b"[]", b"not json", b'{"alias": "alpha", "current": {"start": 0, "end": Infinity}}', b'"\xff\xfe"', b"1e999"],
)
def test_malformed_bodies_are_400(gateway: tuple[Gateway, dict[str, str]], raw: bytes) -> None:
    gw, keys = gateway
    headers = {"Authorization": f"Bearer {keys['op']}", "Content-Type": "application/json"}
    response = httpx.post(gw.url + "/admin/drift/check", content=raw, headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    error_of(response)


def test_oversized_body_is_413(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    response = call(gw, "POST", "/admin/drift/check", keys["op"], json={"alias": "alpha", "pad": "x" * 100_000})
    assert response.status_code == 413
    error_of(response)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1e3"},
        {"limit": "99999999"},
        {"since": "yesterday-ish"},
        {"bogus": "1"},
        {"alias": "a\x00"},
        {"drifted": "maybe"},
    ],
)
def test_hostile_query_params_are_400(gateway: tuple[Gateway, dict[str, str]], params: dict[str, str]) -> None:
    gw, keys = gateway
    response = call(gw, "GET", "/admin/drift/checks", keys["op"], params=params)
    assert response.status_code == 400, response.text
    error_of(response)


def test_baselines_are_scoped_and_audited(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    body = {"alias": "alpha", "start": 100.0, "end": 200.0}
    assert call(gw, "PUT", "/admin/drift/baseline", keys["a-dev"], json=body).status_code == 403
    assert call(gw, "PUT", "/admin/drift/baseline", keys["a-admin"], json=body).json()["tenant"] == "a"
    assert call(gw, "PUT", "/admin/drift/baseline", keys["a-admin"], json={**body, "tenant": "b"}).status_code == 403
    assert call(gw, "GET", "/admin/drift/baseline", keys["a-dev"], params={"alias": "alpha"}).json()["end"] == 200.0
    assert call(gw, "GET", "/admin/drift/baseline", keys["b-admin"], params={"alias": "alpha"}).status_code == 404
    assert call(gw, "GET", "/admin/drift/baseline", keys["op"], params={"alias": "alpha"}).status_code == 404
    reversed_ = call(gw, "PUT", "/admin/drift/baseline", keys["op"], json={"alias": "alpha", "start": 5, "end": 1})
    assert reversed_.status_code == 400
    # The pinned baseline becomes the reference of the tenant's next check.
    result = call(gw, "POST", "/admin/drift/check", keys["a-admin"], json={"alias": "alpha"}).json()
    assert result["reference"]["kind"] == "fixed" and result["reference"]["start"] == 100.0
    assert call(gw, "DELETE", "/admin/drift/baseline", keys["a-admin"], params={"alias": "alpha"}).status_code == 200
    assert call(gw, "DELETE", "/admin/drift/baseline", keys["a-admin"], params={"alias": "alpha"}).status_code == 404
    actions = [e["action"] for e in gw.app.state.gateway.record_log.store.audit_entries(50)]
    assert "drift.baseline.set" in actions and "drift.baseline.delete" in actions


def test_readyz_shows_the_monitor(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    body = call(gw, "GET", "/readyz", keys["op"]).json()  # the detail is shown to a key
    drift = body.get("drift")
    assert drift is not None, body
    assert "collector" in drift and "holder" in drift


@pytest.mark.parametrize("alias", ["FAKE-1", "ghost-model-1"])
def test_a_check_of_an_alias_that_is_not_configured_is_404(gateway: tuple[Gateway, dict[str, str]], alias: str) -> None:
    gw, keys = gateway
    before = len(DriftHistory(gw.app.state.gateway.record_log.store).list(limit=1000))
    for key in ("op", "a-admin"):
        response = call(gw, "POST", "/admin/drift/check", keys[key], json={"alias": alias})
        assert response.status_code == 404, response.text
        assert error_of(response)["code"] == "model_not_found" and error_of(response)["param"] == "alias"
    baseline = call(gw, "PUT", "/admin/drift/baseline", keys["op"], json={"alias": alias, "start": 1, "end": 2})
    assert baseline.status_code == 404 and error_of(baseline)["code"] == "model_not_found"
    assert len(DriftHistory(gw.app.state.gateway.record_log.store).list(limit=1000)) == before  # nothing stored


def test_requests_to_unknown_models_are_not_monitored(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    service = next(s for s in gw.app.state.gateway.services if s.name == "drift")
    before = service.collector.status()
    for model in ["ghost-model-1", "<img src=x onerror=alert(1)>", "ghost\x00nul"]:
        body = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
        response = call(gw, "POST", "/v1/chat/completions", keys["a-admin"], json=body)
        assert response.status_code in (400, 404), response.text

    def seen() -> bool:
        status = service.collector.status()
        return bool(status["received"] - before["received"] >= 3 and status["queued"] == 0)

    assert wait_until(seen, 60), service.collector.status()
    service.collector.flush()
    status = service.collector.status()
    assert status["flush_errors"] == before["flush_errors"] and status["summarised"] == before["summarised"]
    aliases = {alias for alias, _ in WindowStore(gw.app.state.gateway.record_log.store).scopes(0)}
    assert aliases <= {"alpha"}, aliases


def test_scope_global_lists_only_the_all_tenant_checks(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    rows = call(gw, "GET", "/admin/drift/checks", keys["op"], params={"scope": "global", "alias": "alpha"}).json()
    assert rows["data"] and {r["tenant"] for r in rows["data"]} == {None}
    denied = call(gw, "GET", "/admin/drift/checks", keys["a-dev"], params={"scope": "global"})
    assert denied.status_code == 403 and error_of(denied)["param"] == "scope"
    both = call(gw, "GET", "/admin/drift/checks", keys["op"], params={"scope": "global", "tenant": "a"})
    assert both.status_code == 400 and error_of(both)["param"] == "tenant"
    assert call(gw, "GET", "/admin/drift/checks", keys["op"], params={"scope": "all\x00"}).status_code == 400


def test_cli_report_without_tenant_is_the_all_tenant_check(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    # Tenant a's check is newer than the global one (the fixture's order): it must not be the report.
    history = DriftHistory(gw.app.state.gateway.record_log.store)
    history.add({"alias": "alpha", "tenant": "a", "checked_at": 9e9, "drifted": False, "score": 0.0, "tests": []})

    def report(key: str, *extra: str) -> dict[str, Any]:
        args = ["drift", "report", "--alias", "alpha", "--format", "json", "--url", gw.url + "/v1", "--api-key", key]
        result = CliRunner().invoke(cli, [*args, *extra])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.output))

    assert report(keys["op"])["tenant"] is None
    assert report(keys["op"], "--tenant", "a")["tenant"] == "a"
    assert report(keys["a-dev"])["tenant"] == "a"  # a tenant key: its own tenant's checks, the only ones it sees


@pytest.mark.parametrize("error", [sqlite3.OperationalError("database is locked"), TimeoutError("pool timeout")])
def test_a_locked_store_is_503(
    gateway: tuple[Gateway, dict[str, str]], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    gw, keys = gateway

    def locked(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(DriftHistory, "add", locked)
    monkeypatch.setattr(DriftHistory, "list", locked)
    response = call(gw, "POST", "/admin/drift/check", keys["op"], json={"alias": "alpha"})
    assert response.status_code == 503, response.text
    assert error_of(response)["type"] == "store_unavailable"
    assert call(gw, "GET", "/admin/drift/checks", keys["op"]).status_code == 503


@pytest.mark.timeout(180)
def test_a_really_locked_sqlite_store_is_503_not_500(gateway: tuple[Gateway, dict[str, str]]) -> None:
    """Another process holds SQLite's write lock past the store's busy timeout (30 s): the check's
    insert gives up with "database is locked", which the route answers as a 503."""
    gw, keys = gateway
    path = gw.config.record.store.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, timeout=5)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held for the whole call
    try:
        response = call(gw, "POST", "/admin/drift/check", keys["op"], json={"alias": "alpha"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503, response.text
    error = error_of(response)
    assert error["type"] == "store_unavailable" and "locked" in error["message"]
    assert call(gw, "POST", "/admin/drift/check", keys["op"], json={"alias": "alpha"}).status_code == 200


def test_a_tenant_admin_cannot_run_checks_back_to_back(upstream_server: FakeUpstream) -> None:
    # A probe ran 136 checks a second as a tenant admin (each ~0.2 s of CPU with embeddings, each a
    # stored row). One check of an alias per interval per tenant; other tenants and the operator are
    # not held back by it.
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "m"}
    gw = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN},
            "models": [{"name": "alpha", "deployments": [deployment]}],
            "drift": {"enabled": True, "embeddings": False, "interval": "1h", "per_tenant": True},
        }
    )
    try:
        keys = {}
        for tenant in ("a", "b"):
            created = call(gw, "POST", "/admin/keys", ADMIN, json={"tenant": tenant, "role": "admin"})
            keys[tenant] = created.json()["secret"]
        first = call(gw, "POST", "/admin/drift/check", keys["b"], json={"alias": "alpha"})
        assert first.status_code == 200, first.text
        again = call(gw, "POST", "/admin/drift/check", keys["b"], json={"alias": "alpha"})
        assert again.status_code == 429, again.text
        assert error_of(again)["code"] == "drift_check_rate_limited" and error_of(again)["type"] == "rate_limit_error"
        assert 1 <= int(again.headers["retry-after"]) <= 10
        other_tenant = call(gw, "POST", "/admin/drift/check", keys["a"], json={"alias": "alpha"})
        assert other_tenant.status_code == 200, other_tenant.text
        for _ in range(2):
            operator = call(gw, "POST", "/admin/drift/check", ADMIN, json={"alias": "alpha"})
            assert operator.status_code == 200, operator.text
    finally:
        gw.server.stop()


def test_one_check_at_a_time_per_scope() -> None:
    from opsgate.drift.manual_checks import ManualChecks
    from opsgate.limits.errors import RateLimitError

    manual = ManualChecks(interval=0)
    with manual.admit(None, "alpha", operator=True):
        with pytest.raises(RateLimitError) as running, manual.admit(None, "beta", operator=True):
            pass
        assert running.value.code == "drift_check_running"
        with manual.admit("t1", "alpha", operator=False):  # another scope runs meanwhile
            pass
    with manual.admit(None, "alpha", operator=True):  # released
        pass
