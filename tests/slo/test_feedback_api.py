"""Feedback, SLO and dashboard endpoints over real HTTP, with the OpenAI SDK as the client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from opsgate.domain.config import parse_config
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

EXAMPLE = Path(__file__).resolve().parents[2] / "src" / "opsgate" / "defaults" / "slo-example.yaml"
ADMIN_KEY = "bootstrap-admin-key-for-slo-tests-0123456789"


def config(base_url: str, **extra: object) -> dict[str, object]:
    example = yaml.safe_load(EXAMPLE.read_text())
    return {
        "models": [{"name": "up", "deployments": [{"type": "openai", "base_url": base_url, "model": "real-model"}]}],
        "slo": example["slo"],
        "alerts": {"enabled": False},
        **extra,
    }


@pytest.fixture(scope="module")
def gateway(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    upstream_server.script = Script()
    started = start_gateway(config(upstream_server.base_url))
    yield started
    started.server.stop()


def ask(gateway: Gateway) -> str:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.chat.completions.with_raw_response.create(model="up", messages=[{"role": "user", "content": "hi"}])
    return str(raw.headers["x-request-id"])


def test_example_config_encodes_the_seed_tables() -> None:
    parsed = parse_config(yaml.safe_load(EXAMPLE.read_text()))
    slis = {o.sli for o in parsed.slo.objectives}
    assert slis == {
        "availability",
        "error_rate",
        "csat",
        "latency",
        "ttft",
        "throughput",
        "eval_degradation",
        "data_freshness",
        "guard_detection",
        # quality SLIs and the drift/sentinel measurements (issue 15)
        "injection_rate",
        "pii_leak_rate",
        "toxicity_rate",
        "low_confidence_rate",
        "refusal_rate",
        "drift",
        "behaviour_change",
    }
    assert [(r.long_window, r.short_window, r.burn_rate) for r in parsed.alerts.rules] == [
        ("1h", "5m", 14.4),
        ("6h", "30m", 6.0),
        ("3d", "6h", 1.0),
    ]


def test_feedback_right_after_the_request_and_csat(gateway: Gateway) -> None:
    ids = [ask(gateway) for _ in range(4)]
    # Posted at once: the record may not be stored yet; the handler waits for the writer.
    scores: list[object] = ["up", 5, 2, "down"]
    for request_id, score in zip(ids, scores, strict=True):
        response = httpx.post(gateway.url + "/v1/feedback", json={"request_id": request_id, "score": score})
        assert response.status_code == 201, response.text
        assert response.json()["object"] == "feedback" and response.json()["id"].startswith("fb_")
    summary = httpx.get(gateway.url + "/admin/feedback/summary?by=model&since=1h").json()
    up = next(row for row in summary["data"] if row["model"] == "up")
    assert up["feedback"] >= 4
    assert summary["overall"]["scored"] >= 2
    csat = next(s for s in httpx.get(gateway.url + "/admin/slo").json()["data"] if s["name"] == "csat")
    assert csat["current"] is not None and 0 < csat["current"] < 1
    assert set(csat["burn_rates"]) == {"1h", "5m", "6h", "30m", "3d"}


def test_one_request_rated_many_times_counts_once(upstream_server: FakeUpstream) -> None:
    # A probe rated one answer "down" 300 times in half a second and paged the operators through the
    # global CSAT objective. Each request counts once, with its latest rating; repeats by the same
    # user replace the earlier row; another user's rating of the same answer is kept.
    upstream_server.script = Script()
    started = start_gateway(config(upstream_server.base_url))
    try:
        liked, hammered = ask(started), ask(started)
        assert httpx.post(started.url + "/v1/feedback", json={"request_id": liked, "score": "up"}).status_code == 201
        for _ in range(40):
            posted = httpx.post(started.url + "/v1/feedback", json={"request_id": hammered, "score": "down"})
            assert posted.status_code == 201, posted.text
        other = {"request_id": hammered, "score": "down", "user": "someone-else"}
        assert httpx.post(started.url + "/v1/feedback", json=other).status_code == 201
        summary = httpx.get(started.url + "/admin/feedback/summary?by=model&since=1h").json()
        assert summary["overall"]["feedback"] == 2 and summary["overall"]["csat"] == 0.5, summary
        csat = next(s for s in httpx.get(started.url + "/admin/slo").json()["data"] if s["name"] == "csat")
        assert csat["current"] == pytest.approx(0.5), csat
        store = started.app.state.gateway.record_log.store
        with store.connection() as conn:
            kept = store.execute(conn, "SELECT count(*) FROM feedback WHERE request_id = ?", [hammered]).fetchone()
        assert kept[0] == 2  # one anonymous row (the latest of 40) and the other user's
        # The latest rating wins: the hammered answer is now liked.
        assert httpx.post(started.url + "/v1/feedback", json=other | {"score": "up"}).status_code == 201
        summary = httpx.get(started.url + "/admin/feedback/summary?by=model&since=1h").json()
        assert summary["overall"]["csat"] == 1.0, summary
    finally:
        started.server.stop()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"request_id": "x", "score": 6}, "score"),
        ({"request_id": "x", "score": True}, "score"),
        ({"request_id": "x", "score": "meh"}, "score"),
        ({"score": "up"}, "request_id"),
        ({"request_id": "x", "score": "up", "colour": "red"}, "colour"),
    ],
)
def test_bad_feedback_is_a_400(gateway: Gateway, body: dict[str, object], param: str) -> None:
    response = httpx.post(gateway.url + "/v1/feedback", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_unknown_request_is_a_404(gateway: Gateway) -> None:
    response = httpx.post(gateway.url + "/v1/feedback", json={"request_id": "no-such-request", "score": "up"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "request_not_found"


def test_dashboard_shapes(gateway: Gateway) -> None:
    ask(gateway)
    assert gateway.app.state.gateway.record_log.writer.flush()
    series = httpx.get(gateway.url + "/admin/stats/timeseries?since=10m&step=1m").json()["data"]
    assert set(series[0]) >= {"ts", "requests", "errors", "p50_ms", "p95_ms", "p99_ms", "cost", "prompt_tokens"}
    assert sum(p["requests"] for p in series) >= 1
    history = httpx.get(gateway.url + "/admin/slo/availability/history?since=1h").json()["data"]
    assert history and history[-1]["sli"] == 1.0
    rows = httpx.get(gateway.url + "/admin/slo").json()["data"]
    assert {
        "name",
        "sli",
        "target",
        "window",
        "current",
        "budget_remaining",
        "burn_rates",
        "state",
        "sla",
        "kpi",
    } <= set(rows[0])
    measured = httpx.post(gateway.url + "/admin/slo/measurements", json={"slo": "guard-detection", "value": 0.97})
    assert measured.status_code == 201
    guard = next(r for r in httpx.get(gateway.url + "/admin/slo").json()["data"] if r["name"] == "guard-detection")
    assert guard["current"] == 0.97 and guard["state"] == "ok"
    for path, param in [
        ("/admin/stats/timeseries?step=7s", "step"),
        ("/admin/stats/timeseries?since=30d&step=1m", "step"),
        ("/admin/stats/timeseries?since=1h&step=15s", "step"),
        ("/admin/slo/nope/history", "name"),
        ("/admin/errors?since=yesterday", "since"),
        ("/admin/feedback/summary?by=colour", "by"),
    ]:
        response = httpx.get(gateway.url + path)
        assert 400 <= response.status_code < 500, path
        assert response.json()["error"]["param"] == param, path


def test_tenants_see_only_their_own(upstream_server: FakeUpstream) -> None:
    upstream_server.script = Script()
    gw = start_gateway(config(upstream_server.base_url, auth={"enabled": True, "admin_key": ADMIN_KEY}))
    try:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        keys = {}
        for tenant in ("a", "b"):
            created = httpx.post(gw.url + "/admin/keys", headers=admin, json={"tenant": tenant, "role": "developer"})
            assert created.status_code == 201, created.text
            keys[tenant] = {"Authorization": f"Bearer {created.json()['secret']}"}
        body = {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
        request_b = httpx.post(gw.url + "/v1/chat/completions", headers=keys["b"], json=body).headers["x-request-id"]
        upstream_server.script = Script(mode="status", status=500, body={"error": {"message": "boom"}})
        assert httpx.post(gw.url + "/v1/chat/completions", headers=keys["b"], json=body).status_code == 502
        assert gw.app.state.gateway.record_log.writer.flush()
        # Tenant a cannot rate tenant b's request, nor see b's traffic, errors or feedback.
        denied = httpx.post(gw.url + "/v1/feedback", headers=keys["a"], json={"request_id": request_b, "score": "up"})
        assert denied.status_code == 404
        assert (
            httpx.post(
                gw.url + "/v1/feedback", headers=keys["b"], json={"request_id": request_b, "score": "up"}
            ).status_code
            == 201
        )
        availability_a = next(
            r for r in httpx.get(gw.url + "/admin/slo", headers=keys["a"]).json()["data"] if r["name"] == "availability"
        )
        assert availability_a["events"] == 0
        assert httpx.get(gw.url + "/admin/errors", headers=keys["a"]).json()["data"] == []
        assert len(httpx.get(gw.url + "/admin/errors", headers=keys["b"]).json()["data"]) == 1
        series = httpx.get(gw.url + "/admin/stats/timeseries?since=10m&step=1m", headers=keys["a"]).json()["data"]
        assert sum(p["requests"] for p in series) == 0
        assert httpx.get(gw.url + "/admin/feedback/summary", headers=keys["a"]).json()["overall"]["feedback"] == 0
        other = httpx.get(gw.url + "/admin/errors?tenant=b", headers=keys["a"])
        assert other.status_code == 403
        operator = httpx.get(gw.url + "/admin/errors", headers=admin).json()["data"]
        assert len(operator) == 1
    finally:
        upstream_server.script = Script()
        gw.server.stop()
