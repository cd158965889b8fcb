"""``/admin/evals`` over real HTTP with keys: tenant scoping, roles, and hostile inputs as 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.evals.dataset import parse_item
from opsgate.evals.runner import summarise_run
from opsgate.evals.store import EvalStore, ItemResult
from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway

ADMIN = "bootstrap-admin-key-for-evals-0123456789"


@pytest.fixture(scope="module")
def gateway(upstream_server: FakeUpstream) -> Iterator[tuple[Gateway, dict[str, str]]]:
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "m"}
    gw = start_gateway(
        {"auth": {"enabled": True, "admin_key": ADMIN}, "models": [{"name": "alpha", "deployments": [deployment]}]}
    )
    keys = {}
    for name, tenant, role in [("a-dev", "a", "developer"), ("a-admin", "a", "admin"), ("b-dev", "b", "developer")]:
        response = httpx.post(
            gw.url + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"}, json={"tenant": tenant, "role": role}
        )
        keys[name] = response.json()["secret"]
    yield gw, keys
    gw.server.stop()


def call(gw: Gateway, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs)


def test_tenant_scoping_and_roles(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    items = [{"prompt": "2+2?", "reference": "4"}, {"messages": [{"role": "user", "content": "hi"}]}]
    assert (
        call(gw, "POST", "/admin/evals/datasets", keys["a-dev"], json={"name": "s", "items": items}).status_code == 403
    )
    created = call(gw, "POST", "/admin/evals/datasets", keys["a-admin"], json={"name": "s", "items": items})
    assert created.status_code == 201 and created.json()["tenant"] == "a" and created.json()["version"] == 1
    same = call(gw, "POST", "/admin/evals/datasets", keys["a-admin"], json={"name": "s", "items": items})
    assert same.status_code == 200 and same.json()["created"] is False
    other = call(
        gw, "POST", "/admin/evals/datasets", keys["a-admin"], json={"name": "s", "items": items, "tenant": "b"}
    )
    assert other.status_code == 403
    ds = created.json()["id"]
    assert call(gw, "GET", f"/admin/evals/datasets/{ds}", keys["a-dev"]).json()["data"][0]["reference"] == "4"
    assert call(gw, "GET", f"/admin/evals/datasets/{ds}", keys["b-dev"]).status_code == 404
    assert call(gw, "GET", "/admin/evals/datasets/s", keys["b-dev"]).status_code == 404
    export = call(gw, "GET", f"/admin/evals/datasets/{ds}/export", keys["a-dev"])
    assert export.status_code == 200 and export.text.count("\n") == 2
    store = EvalStore(gw.app.state.gateway.record_log.store)
    run_a = store.create_run("a", "alpha", dataset_id=ds, settings={"scorers": [{"name": "exact"}]})
    run_a2 = store.create_run("a", "alpha", dataset_id=ds)
    for run, passed in ((run_a, True), (run_a2, False)):
        score = {"exact": {"value": float(passed), "passed": passed}}
        store.write_results(run, "a", "alpha", [ItemResult("000000", 0, "ok", output="4", scores=score)])
    page = call(gw, "GET", f"/admin/evals/runs/{run_a}/items", keys["a-dev"]).json()
    assert page["data"][0]["scores"]["exact"]["passed"] is True
    assert call(gw, "GET", f"/admin/evals/runs/{run_a}", keys["b-dev"]).status_code == 404
    assert [r["id"] for r in call(gw, "GET", "/admin/evals/runs", keys["b-dev"]).json()["data"]] == []
    params = {"baseline": run_a, "candidate": run_a2}
    compared = call(gw, "GET", "/admin/evals/compare", keys["a-dev"], params=params)
    assert compared.status_code == 200 and compared.json()["comparisons"][0]["diff"] == -1.0
    assert call(gw, "GET", "/admin/evals/compare", keys["b-dev"], params=params).status_code == 404
    verdict = call(gw, "GET", "/admin/evals/gate", keys["a-dev"], params=params).json()
    assert verdict["passed"] is False
    assert call(gw, "GET", "/admin/evals/report", keys["a-dev"], params={"run": [run_a, run_a2]}).status_code == 200
    assert call(gw, "GET", "/admin/evals/report", keys["b-dev"], params={"run": run_a}).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "param"),
    [
        ("POST", "/admin/evals/datasets", {"content": b"{nope"}, 400, None),
        (
            "POST",
            "/admin/evals/datasets",
            {"json": {"name": "x", "items": [{"prompt": "a\u0000b"}]}},
            400,
            "items[0].prompt",
        ),
        ("POST", "/admin/evals/datasets", {"json": {"name": "x", "items": [{"prompt": 1}]}}, 400, "items[0].prompt"),
        ("POST", "/admin/evals/datasets", {"json": {"name": "../x", "items": [{"prompt": "a"}]}}, 400, "name"),
        ("POST", "/admin/evals/datasets", {"json": {"name": "x", "items": []}}, 400, "items"),
        ("POST", "/admin/evals/datasets", {"json": {"name": "x", "items": [{}], "admin": True}}, 400, "admin"),
        ("POST", "/admin/evals/datasets", {"content": b'{"name": "x", "items": [' + b" " * 70_000 + b"]}"}, 413, None),
        ("GET", "/admin/evals/runs/%00", {}, 400, None),
        ("GET", "/admin/evals/runs/" + "x" * 300, {}, 404, "run"),
        ("GET", "/admin/evals/runs?limit=0", {}, 400, "limit"),
        ("GET", "/admin/evals/runs?limit=99999999999", {}, 400, "limit"),
        ("GET", "/admin/evals/runs?colour=red", {}, 400, "colour"),
        ("GET", "/admin/evals/runs/nope/items?after=%27%20OR%201%3D1", {}, 404, "run"),
        ("GET", "/admin/evals/compare?baseline=a", {}, 400, "candidate"),
        ("GET", "/admin/evals/gate?baseline=a&candidate=b&max_degradation=lots", {}, 400, "max_degradation"),
        ("GET", "/admin/evals/report", {}, 400, "run"),
        ("GET", "/admin/evals/report?run=a&format=exe", {}, 400, "format"),
    ],
)
def test_client_mistakes_are_4xx_in_the_openai_shape(
    gateway: tuple[Gateway, dict[str, str]],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    param: str | None,
) -> None:
    gw, keys = gateway
    headers = {"Content-Type": "application/json"} if "content" in kwargs else {}
    response = httpx.request(
        method, gw.url + path, headers={"Authorization": f"Bearer {keys['a-admin']}", **headers}, timeout=30, **kwargs
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param


def test_dataset_items_of_another_tenant_never_leak_through_names(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    store = EvalStore(gw.app.state.gateway.record_log.store)
    store.save_dataset("b", "shared-name", [parse_item({"prompt": "b-secret-prompt"})])
    response = call(gw, "GET", "/admin/evals/datasets/shared-name", keys["a-dev"])
    assert response.status_code == 404 and "b-secret-prompt" not in response.text


def test_ui_pages_are_scoped_and_escape(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    store = EvalStore(gw.app.state.gateway.record_log.store)
    version, _ = store.save_dataset("a", "ui-set", [parse_item({"prompt": "<script>alert(1)</script>"})])
    runs = []
    for output in ("<b>bold</b>", "plain"):
        run = store.create_run("a", "alpha", dataset_id=version.id)
        judge = {"value": 4.0, "passed": None, "details": {"reasons": ["ok", "fine"], "agreement": 1.0, "spread": 0.0}}
        score = {"exact": {"value": 1.0, "passed": True}, "judge": judge}
        store.write_results(
            run,
            "a",
            "alpha",
            [ItemResult("000000", 0, "ok", input="<script>x</script>", output=output, scores=score, latency_ms=5.0)],
        )
        store.finish_run(run, "completed", summarise_run(store, run))
        runs.append(run)
    page = call(gw, "GET", f"/ui/evals/runs/{runs[0]}", keys["a-dev"])
    assert page.status_code == 200 and "&lt;b&gt;bold&lt;/b&gt;" in page.text and "<script>x" not in page.text
    assert "ok / fine" in page.text
    assert call(gw, "GET", f"/ui/evals/runs/{runs[0]}", keys["b-dev"]).status_code == 404
    listing = call(gw, "GET", "/ui/evals", keys["a-dev"])
    assert listing.status_code == 200 and runs[0] in listing.text
    assert runs[0] not in call(gw, "GET", "/ui/evals", keys["b-dev"]).text
    compare = call(gw, "GET", "/ui/evals/compare", keys["a-dev"], params={"baseline": runs[0], "candidate": runs[1]})
    assert compare.status_code == 200 and "no significant difference" in compare.text
    assert "data:image/png;base64," in compare.text
    other = call(gw, "GET", "/ui/evals/compare", keys["b-dev"], params={"baseline": runs[0], "candidate": runs[1]})
    assert other.status_code == 404
