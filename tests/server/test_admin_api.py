"""The admin JSON API (server/admin.py) over a real gateway, its real SQLite request log and a fake upstream."""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from opsgate.domain.config import parse_config
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway


def admin_config(base_url: str) -> dict[str, Any]:
    """Two chat aliases on the fake upstream; only ``alpha`` has a price, so only it has a cost."""
    deployment = {"type": "openai", "base_url": base_url, "model": "real-model"}
    return {
        "models": [
            {
                "name": "alpha",
                "price": {"input_per_million": 1.0, "output_per_million": 2.0},
                "deployments": [deployment],
            },
            {"name": "beta", "deployments": [deployment]},
        ]
    }


@dataclass
class Logged:
    """A gateway and the requests it has recorded: request id -> what was sent."""

    gateway: Gateway
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.gateway.url + path, params=params, timeout=30)

    def send(self, upstream: FakeUpstream, model: str, text: str, user: str, answer: str = "ok", **extra: Any) -> str:
        upstream.script = Script(content=answer)
        body = {"model": model, "messages": [{"role": "user", "content": text}], "user": user, **extra}
        response = httpx.post(self.gateway.base_url + "/chat/completions", json=body, timeout=30)
        request_id = response.headers["x-request-id"]
        self.sent[request_id] = {**body, "status": response.status_code}
        return request_id

    def flush(self) -> None:
        record_log = self.gateway.app.state.gateway.record_log
        assert record_log.writer.flush(), "the writer did not store the journal in time"


@pytest.fixture(scope="module")
def logged(upstream_server: FakeUpstream) -> Iterator[Logged]:
    """Five requests: two models, three users, two non-Latin texts, one unknown model (a recorded 404)."""
    state = Logged(start_gateway(admin_config(upstream_server.base_url)))
    state.send(upstream_server, "alpha", "Grüße aus Berlin", "ana", metadata={"team": "search"})
    state.send(upstream_server, "alpha", "Wetter in 東京 heute", "ana", answer="Kirschblüte im Park")
    state.send(upstream_server, "beta", "apples and oranges", "bob", metadata={"team": "ads"})
    state.send(upstream_server, "beta", "pears only", "bob")
    state.send(upstream_server, "nope", "to a model that does not exist", "carl")
    state.flush()
    yield state
    state.gateway.server.stop()


def ids_of(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {row["id"] for row in response.json()["data"]}


def sent_where(logged: Logged, **match: Any) -> set[str]:
    return {rid for rid, body in logged.sent.items() if all(body.get(k) == v for k, v in match.items())}


# -- search -------------------------------------------------------------------------------------------


def test_search_lists_every_record_newest_first(logged: Logged) -> None:
    body = logged.get("/admin/requests").json()
    assert body["object"] == "list" and body["next_cursor"] is None
    assert {row["id"] for row in body["data"]} == set(logged.sent)
    stamps = [row["ts"] for row in body["data"]]
    assert stamps == sorted(stamps, reverse=True)
    assert "request" not in body["data"][0] and "response" not in body["data"][0]  # listings carry no payloads


@pytest.mark.parametrize(
    ("word", "sent_text"),
    [
        ("Grüße", "Grüße aus Berlin"),  # trigram FTS, non-ASCII Latin
        ("東京", "Wetter in 東京 heute"),  # two characters: the LIKE fallback, CJK
        ("apples", "apples and oranges"),
    ],
)
def test_search_by_word_in_the_input(logged: Logged, word: str, sent_text: str) -> None:
    expected = {rid for rid, body in logged.sent.items() if body["messages"][0]["content"] == sent_text}
    assert ids_of(logged.get("/admin/requests", q=word)) == expected


def test_search_by_word_in_the_output(logged: Logged) -> None:
    expected = {rid for rid, body in logged.sent.items() if "東京" in body["messages"][0]["content"]}
    assert ids_of(logged.get("/admin/requests", q="Kirschblüte")) == expected
    assert ids_of(logged.get("/admin/requests", q="nowhere-to-be-found")) == set()


def test_search_by_model_user_and_status(logged: Logged) -> None:
    assert ids_of(logged.get("/admin/requests", model="alpha")) == sent_where(logged, model="alpha")
    assert ids_of(logged.get("/admin/requests", user="bob")) == sent_where(logged, user="bob")
    assert ids_of(logged.get("/admin/requests", model="beta", user="ana")) == set()
    unknown = sent_where(logged, model="nope")
    assert len(unknown) == 1
    assert ids_of(logged.get("/admin/requests", status="404")) == unknown  # the 404 is recorded too
    assert ids_of(logged.get("/admin/requests", status="4xx")) == unknown
    assert ids_of(logged.get("/admin/requests", status="error")) == unknown
    assert ids_of(logged.get("/admin/requests", status="2xx")) == set(logged.sent) - unknown
    row = logged.get("/admin/requests", status="404").json()["data"][0]
    assert row["model"] == "nope" and row["user_id"] == "carl" and row["error_type"] == "invalid_request_error"


def test_search_by_cost_latency_and_time(logged: Logged) -> None:
    # Only alpha has a price; the fake upstream reports 7 prompt + 5 completion tokens.
    assert ids_of(logged.get("/admin/requests", min_cost="0.000001")) == sent_where(logged, model="alpha")
    assert ids_of(logged.get("/admin/requests", max_cost="0")) == set()
    assert ids_of(logged.get("/admin/requests", min_latency_ms="0", since="1h")) == set(logged.sent)
    assert ids_of(logged.get("/admin/requests", until="1h")) == set()
    assert ids_of(logged.get("/admin/requests", since=str(time.time() + 60))) == set()
    rows = logged.get("/admin/requests").json()["data"]
    assert all(row["stored_at"] >= row["ts"] for row in rows)  # stored after the request started
    assert ids_of(logged.get("/admin/requests", stored_since="1h")) == set(logged.sent)
    assert ids_of(logged.get("/admin/requests", stored_since=str(time.time() + 60))) == set()


def test_pagination_with_the_cursor_visits_every_record_once(logged: Logged) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = logged.get("/admin/requests", **params).json()
        assert len(body["data"]) <= 2
        seen += [row["id"] for row in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(logged.sent) and len(seen) == len(set(seen)) == 5


# -- one record ---------------------------------------------------------------------------------------


def test_get_by_id_has_the_payloads(logged: Logged) -> None:
    (rid,) = {rid for rid, body in logged.sent.items() if "東京" in body["messages"][0]["content"]}
    record = logged.get(f"/admin/requests/{rid}").json()
    assert record["id"] == rid and record["model"] == "alpha" and record["user_id"] == "ana"
    assert record["request"]["messages"] == [{"role": "user", "content": "Wetter in 東京 heute"}]
    assert record["response"]["content"] == "Kirschblüte im Park"
    assert record["prompt_tokens"] == 7 and record["completion_tokens"] == 5
    assert record["cost"] == pytest.approx((7 * 1.0 + 5 * 2.0) / 1_000_000)


def test_get_missing_id_is_a_404_in_the_openai_shape(logged: Logged) -> None:
    response = logged.get("/admin/requests/no-such-id")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "No request record with id 'no-such-id'.",
        "type": "invalid_request_error",
        "param": "id",
        "code": "record_not_found",
    }


# -- export -------------------------------------------------------------------------------------------


def test_export_jsonl_has_every_record_with_payloads(logged: Logged) -> None:
    response = logged.get("/admin/requests/export", format="jsonl")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    records = [orjson.loads(line) for line in response.content.splitlines()]
    assert {r["id"] for r in records} == set(logged.sent) and len(records) == 5
    by_id = {r["id"]: r for r in records}
    for rid, body in logged.sent.items():
        assert by_id[rid]["request"]["messages"] == body["messages"]


def test_export_csv_round_trips(logged: Logged) -> None:
    response = logged.get("/admin/requests/export", format="csv", model="beta")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {row["id"] for row in rows} == sent_where(logged, model="beta")
    from opsgate.store.sql import LIST_COLUMNS

    assert list(rows[0]) == [*LIST_COLUMNS, "request", "response"]
    for row in rows:
        assert orjson.loads(row["request"])["messages"] == logged.sent[row["id"]]["messages"]
        assert orjson.loads(row["response"])["content"] == "ok"
        assert row["stream"] == "false" and row["status"] == "200"


def test_export_respects_filters_and_limit(logged: Logged) -> None:
    lines = logged.get("/admin/requests/export", q="Grüße").content.splitlines()
    assert len(lines) == 1 and orjson.loads(lines[0])["request"]["messages"][0]["content"] == "Grüße aus Berlin"
    assert len(logged.get("/admin/requests/export", limit="3").content.splitlines()) == 3
    assert logged.get("/admin/requests/export", user="nobody").content == b""


def test_export_parquet_without_pyarrow_is_a_clear_400(logged: Logged, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    response = logged.get("/admin/requests/export", format="parquet")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "format" and error["code"] == "pyarrow_not_installed" and "pyarrow" in error["message"]


def test_export_parquet_round_trips(logged: Logged) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    response = logged.get("/admin/requests/export", format="parquet")
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == 5 and set(table.column("id").to_pylist()) == set(logged.sent)


# -- usage and audit ------------------------------------------------------------------------------------


def usage_by(logged: Logged, by: str, **params: str) -> dict[str, dict[str, Any]]:
    response = logged.get("/admin/usage", by=by, **params)
    assert response.status_code == 200, response.text
    assert response.json()["by"] == by
    return {row[by]: row for row in response.json()["data"]}


def test_usage_by_model_user_and_day(logged: Logged) -> None:
    models = usage_by(logged, "model", since="7d")
    assert {m: r["requests"] for m, r in models.items()} == {"alpha": 2, "beta": 2, "nope": 1}
    assert models["nope"]["errors"] == 1 and models["alpha"]["errors"] == 0
    assert models["alpha"]["cost"] == pytest.approx(2 * 17 / 1_000_000) and models["beta"]["cost"] is None
    assert models["beta"]["prompt_tokens"] == 14 and models["beta"]["completion_tokens"] == 10
    users = usage_by(logged, "user")
    assert {u: r["requests"] for u, r in users.items()} == {"ana": 2, "bob": 2, "carl": 1}
    days = usage_by(logged, "day", since="1d", until="0s")
    assert sum(r["requests"] for r in days.values()) == 5
    assert usage_by(logged, "model", until="30d") == {}


def test_audit_lists_entries(logged: Logged) -> None:
    response = logged.get("/admin/audit", limit="5")
    assert response.status_code == 200 and response.json()["object"] == "list"
    # Nothing but the gateway's own start-up entry: reading and searching are not audited actions.
    assert [entry["action"] for entry in response.json()["data"]] == ["config_loaded"]


# -- bad queries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/admin/requests", {"colour": "red"}, "colour"),
        ("/admin/requests", {"since": "last tuesday"}, "since"),
        ("/admin/requests", {"until": "2024-13-45"}, "until"),
        ("/admin/requests", {"stored_since": "lately"}, "stored_since"),
        ("/admin/requests", {"since": "1h", "until": "2h"}, "since"),
        ("/admin/requests", {"limit": "100000"}, "limit"),
        ("/admin/requests", {"limit": "0"}, "limit"),
        ("/admin/requests", {"limit": "2.5"}, "limit"),
        ("/admin/requests", {"cursor": "not-a-cursor"}, "cursor"),
        ("/admin/requests", {"status": "7xx"}, "status"),
        ("/admin/requests", {"tag": "no-equals"}, "tag"),
        ("/admin/requests", {"min_cost": "cheap"}, "min_cost"),
        ("/admin/requests", {"q": "x" * 501}, "q"),
        ("/admin/requests/export", {"format": "xml"}, "format"),
        ("/admin/requests/export", {"format": "csv", "since": "soon"}, "since"),
        ("/admin/usage", {"by": "planet"}, "by"),
        ("/admin/usage", {"since": "whenever"}, "since"),
        ("/admin/usage", {"group": "model"}, "group"),
        ("/admin/audit", {"limit": "0"}, "limit"),
        ("/admin/audit", {"limit": "many"}, "limit"),
    ],
)
def test_bad_queries_are_400_naming_the_parameter(
    logged: Logged, path: str, params: dict[str, str], param: str
) -> None:
    response = logged.get(path, **params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


@pytest.mark.parametrize(
    ("content", "param"),
    [(b'{"user": ""}', "user"), (b'{"who": "ana"}', "user"), (b'["ana"]', "user"), (b"{not json", None)],
)
def test_bad_erasure_bodies_are_400(logged: Logged, content: bytes, param: str | None) -> None:
    response = httpx.post(
        logged.gateway.url + "/admin/erasure", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert ids_of(logged.get("/admin/requests", user="ana")) == sent_where(logged, user="ana")


def test_wrong_method_is_405(logged: Logged) -> None:
    response = httpx.delete(logged.gateway.url + "/admin/requests")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


# -- erasure, tags, no store: each on a gateway of its own ------------------------------------------------


def test_erasure_removes_every_trace_of_the_user(upstream: FakeUpstream) -> None:
    state = Logged(start_gateway(admin_config(upstream.base_url)))
    try:
        for text in ("erin's secret plan", "another from erin"):
            state.send(upstream, "alpha", text, "erin")
        kept = state.send(upstream, "alpha", "frank stays", "frank")
        state.flush()
        response = httpx.post(state.gateway.url + "/admin/erasure", json={"user": "erin"})
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["before"]["requests"] == 2 and result["before"]["usage_daily"] == 1
        assert result["after"] == {
            "requests": 0,
            "usage_daily": 0,
            "audit_log": 0,
            "eval_items": 0,
            "eval_scores": 0,
            "feedback": 0,
        }
        assert result["requests_deleted"] == 2 and "erin" not in response.text
        assert ids_of(state.get("/admin/requests", user="erin")) == set()
        assert ids_of(state.get("/admin/requests", q="secret plan")) == set()
        assert ids_of(state.get("/admin/requests")) == {kept}
        users = usage_by(state, "user")
        assert "erin" not in users and users["frank"]["requests"] == 1 and users[""]["requests"] == 2
        (entry,) = [e for e in state.get("/admin/audit").json()["data"] if e["action"] == "erase_user"]
        assert entry["actor"] == "auth-disabled"  # with auth on: the caller's key id
        assert entry["target"] == "user-sha256:" + result["user_sha256"][:16]
        assert entry["details"] == {
            "requests_deleted": 2,
            "usage_rows_anonymised": 1,
            "eval_items_deleted": 0,
            "eval_scores_deleted": 0,
            "feedback_anonymised": 0,
        }
    finally:
        state.gateway.server.stop()


def test_search_by_tag(upstream: FakeUpstream) -> None:
    # Nothing in the pipeline sets gateway tags yet (ctx.tags), so write tagged records through the sink.
    state = Logged(start_gateway(admin_config(upstream.base_url)))
    try:
        record_log = state.gateway.app.state.gateway.record_log
        base = {"ts": time.time(), "endpoint": "chat", "model": "alpha", "status": 200}
        record_log.write({**base, "id": "t-1", "tags": {"team": "search", "env": "prod"}})
        record_log.write({**base, "id": "t-2", "tags": {"team": "search", "env": "dev"}})
        record_log.write({**base, "id": "t-3", "tags": {"team": "ads"}})
        state.flush()
        assert ids_of(state.get("/admin/requests", tag="team=search")) == {"t-1", "t-2"}
        response = httpx.get(state.gateway.url + "/admin/requests", params=[("tag", "team=search"), ("tag", "env=dev")])
        assert ids_of(response) == {"t-2"}
        assert ids_of(state.get("/admin/requests", tag="team=nobody")) == set()
        assert state.get("/admin/requests/t-1").json()["tags"] == {"team": "search", "env": "prod"}
    finally:
        state.gateway.server.stop()


def test_search_by_request_metadata_as_a_tag(logged: Logged) -> None:
    # The tag filter matches the gateway's tags or the client's OpenAI ``metadata``.
    for team in ("search", "ads"):
        expected = {rid for rid, body in logged.sent.items() if body.get("metadata") == {"team": team}}
        assert len(expected) == 1
        assert ids_of(logged.get("/admin/requests", tag=f"team={team}")) == expected
    assert ids_of(logged.get("/admin/requests", tag="team=nobody")) == set()


def test_gateway_without_a_record_log_says_so(upstream: FakeUpstream) -> None:
    config = parse_config({**admin_config(upstream.base_url), "record": {"store": None}})
    gateway = Gateway(config, keep_record_config=True)  # start_gateway would give it a store
    gateway.server.start("/readyz")
    try:
        for path in ("/admin/requests", "/admin/requests/x", "/admin/usage", "/admin/audit"):
            response = httpx.get(gateway.url + path)
            assert response.status_code == 501
            assert response.json()["error"]["code"] == "record_store_not_configured"
    finally:
        gateway.server.stop()
