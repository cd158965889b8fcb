"""Query parameters over real HTTP: one pydantic parser (server/query_params.py) behind every admin route.

An unknown or malformed parameter is a 400 in the OpenAI shape naming it, on every route module;
errors raised by routes are rendered once, by the app's GatewayError handler, with the same status,
body and headers as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway


@pytest.fixture(scope="module")
def gateway(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    started = start_gateway(
        {
            "releases": {"poll_seconds": 0.5, "auto_rollback": {"enabled": False}},
            "cache": {"enabled": True},
            "models": [
                {
                    "name": "up",
                    "deployments": [{"type": "openai", "base_url": upstream_server.base_url, "model": "m"}],
                }
            ],
        }
    )
    yield started
    started.server.stop()


def call(gateway: Gateway, method: str, path: str, **params: Any) -> httpx.Response:
    return httpx.request(method, gateway.url + path, params=params, timeout=30)


def assert_refused(response: httpx.Response, param: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


# One route of each module, with a parameter none of them takes: every one is refused, naming it.
EVERY_MODULE = [
    ("GET", "/admin/requests/abc"),  # admin.py
    ("GET", "/admin/usage"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/keys"),  # keys_routes.py
    ("DELETE", "/admin/cache"),  # cache_routes.py
    ("GET", "/admin/evals/runs"),  # eval_routes.py
    ("GET", "/admin/prompts"),  # release_routes.py
    ("GET", "/admin/releases"),
    ("GET", "/admin/experiments"),
    ("GET", "/admin/slo"),  # slo_routes.py
    ("GET", "/admin/alerts"),
    ("GET", "/admin/stats/timeseries"),
]


@pytest.mark.parametrize(("method", "path"), EVERY_MODULE)
def test_an_unknown_parameter_is_refused_by_name(gateway: Gateway, method: str, path: str) -> None:
    assert_refused(call(gateway, method, path, tenatn="b"), "tenatn")
    assert_refused(call(gateway, method, path, bogus=""), "bogus")  # unknown even when empty


def test_a_misspelt_tenant_on_prompts_is_not_silently_the_shared_prompts(gateway: Gateway) -> None:
    # Before: ignored, and the operator read (or wrote) the shared prompts instead of tenant b's.
    listed = call(gateway, "GET", "/admin/prompts", tenant="b")
    assert listed.status_code == 200 and listed.json()["tenant"] == "b"
    assert_refused(call(gateway, "GET", "/admin/prompts", tennat="b"), "tennat")


MALFORMED = [
    ("/admin/audit", {"limit": "abc"}, "limit"),
    ("/admin/audit", {"limit": "0"}, "limit"),
    ("/admin/audit", {"limit": "1e3"}, "limit"),
    ("/admin/audit", {"limit": "²"}, "limit"),  # a digit to str.isdigit
    ("/admin/audit", {"limit": "9" * 40}, "limit"),
    ("/admin/audit/verify", {"anchor": "1:zz"}, "anchor"),
    ("/admin/usage", {"by": "colour"}, "by"),
    ("/admin/usage", {"since": "nan"}, "since"),
    ("/admin/usage", {"until": "1e400"}, "until"),
    ("/admin/evals/runs", {"limit": "-1"}, "limit"),
    ("/admin/evals/datasets/d1", {"limit": "1001"}, "limit"),
    ("/admin/evals/compare", {"baseline": "a"}, "candidate"),
    ("/admin/evals/gate", {"baseline": "a", "candidate": "b", "max_degradation": "lots"}, "max_degradation"),
    ("/admin/evals/report", {}, "run"),
    ("/admin/evals/report", {"run": "a", "format": "pdf"}, "format"),
    ("/admin/prompts/p/diff", {"from": "x", "to": "1"}, "from"),
    ("/admin/prompts/p/diff", {"from": "1"}, "to"),
    ("/admin/alerts", {"state": "on fire"}, "state"),
    ("/admin/alerts", {"limit": "1001"}, "limit"),
    ("/admin/errors", {"since": "yesterday-ish"}, "since"),
    ("/admin/stats/timeseries", {"step": "0"}, "step"),
    ("/admin/stats/timeseries", {"step": "1.5"}, "step"),
    ("/admin/stats/timeseries", {"step": "9" * 309}, "step"),  # inf as a float: was a 500 (OverflowError)
    ("/admin/stats/timeseries", {"step": "9" * 20}, "step"),  # finite but longer than any window
    ("/admin/slo/x/history", {"since": "inf"}, "since"),
    ("/admin/feedback/summary", {"since": "-"}, "since"),
]


@pytest.mark.parametrize(("path", "params", "param"), MALFORMED)
def test_a_malformed_value_is_a_400_naming_it(gateway: Gateway, path: str, params: dict[str, str], param: str) -> None:
    assert_refused(call(gateway, "GET", path, **params), param)


def test_report_caps_the_number_of_runs(gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/admin/evals/report", params=[("run", f"r{i}") for i in range(21)])
    assert_refused(response, "run")


def test_nul_anywhere_is_a_400(gateway: Gateway) -> None:
    assert call(gateway, "GET", "/admin/usage", tenant="a\x00b").status_code == 400
    assert call(gateway, "GET", "/admin/slo/a%00b/history").status_code == 400
    assert call(gateway, "GET", "/admin/prompts", **{"x\x00": "1"}).status_code == 400


def test_good_parameters_still_work(gateway: Gateway) -> None:
    assert call(gateway, "GET", "/admin/audit", limit="5").status_code == 200
    assert call(gateway, "GET", "/admin/usage", by="day", since="1h", until="").json()["by"] == "day"
    assert call(gateway, "GET", "/admin/alerts", state="firing", limit="3").status_code == 200
    assert call(gateway, "GET", "/admin/stats/timeseries", since="15m", step="20s").json()["step"] == 20
    assert call(gateway, "GET", "/admin/evals/runs", limit="").status_code == 200  # empty: not given
    assert call(gateway, "DELETE", "/admin/cache").json()["object"] == "cache.purge"


def test_route_errors_keep_their_status_body_and_headers(gateway: Gateway, upstream_server: FakeUpstream) -> None:
    # Raised by the routes, rendered by the app's one handler: 404s in the OpenAI shape.
    missing = call(gateway, "GET", "/admin/evals/runs/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"
    assert missing.headers["content-type"] == "application/json"
    model = call(gateway, "GET", "/v1/models/nope")
    assert model.status_code == 404 and model.json()["error"]["param"] == "model"
    # An error that carries headers keeps them (415 on a JSON body route).
    wrong_type = httpx.post(
        gateway.url + "/admin/prompts", content=b"x", headers={"content-type": "text/plain"}, timeout=30
    )
    assert wrong_type.status_code == 415 and wrong_type.json()["error"]["code"] == "unsupported_media_type"


def test_no_record_store_is_a_501_on_every_module(upstream_server: FakeUpstream) -> None:
    config = {
        "models": [
            {"name": "up", "deployments": [{"type": "openai", "base_url": upstream_server.base_url, "model": "m"}]}
        ]
    }
    started = start_gateway(config)
    try:
        record = started.app.state.gateway.record_log
        started.app.state.gateway.record_log = None  # as with record.store unset
        try:
            for path in ("/admin/usage", "/admin/keys", "/admin/evals/runs", "/admin/prompts", "/admin/slo"):
                response = call(started, "GET", path)
                assert response.status_code == 501, (path, response.text)
                assert response.json()["error"]["code"] == "record_store_not_configured"
        finally:
            started.app.state.gateway.record_log = record
    finally:
        started.server.stop()
