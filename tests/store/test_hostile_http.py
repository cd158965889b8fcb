"""The request log through a real gateway on loopback, on both stores: client request ids cannot erase
records, hostile bodies are recorded, bad admin query parameters are 400s, refused lines are visible."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from opsgate.domain.config import parse_config
from opsgate.store.record_log import RecordLog, open_store
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, wait_until

ADMIN_KEY = "bootstrap-admin-key-for-hostile-tests-0123"


def config(base_url: str, store_url: str, journal: Path, auth: bool = False) -> dict[str, Any]:
    deployment = {"type": "openai", "base_url": base_url, "model": "real-model"}
    data: dict[str, Any] = {
        "models": [{"name": "alpha", "deployments": [deployment]}, {"name": "beta", "deployments": [deployment]}],
        "record": {"store": store_url, "journal_dir": str(journal)},
    }
    if auth:
        data["auth"] = {"enabled": True, "admin_key": ADMIN_KEY, "cache_ttl_seconds": 30}
    return data


@pytest.fixture()
def gateway_on(store_url: str, tmp_path: Path, upstream: FakeUpstream) -> Iterator[Gateway]:
    """A gateway without auth whose request log is ``store_url`` (SQLite file or PostgreSQL schema)."""
    upstream.script = Script(content="fine")
    data = config(upstream.base_url, store_url, tmp_path / "journal")
    (tmp_path / "opsgate.yaml").write_text(yaml.safe_dump(data))
    gateway = Gateway(parse_config(data), keep_record_config=True)
    gateway.server.start("/readyz", timeout=120)
    yield gateway
    gateway.server.stop()


def record_log_of(gateway: Gateway) -> RecordLog:
    record_log: RecordLog = gateway.app.state.gateway.record_log
    return record_log


def flush(gateway: Gateway) -> None:
    writer = record_log_of(gateway).writer
    assert writer is not None and writer.flush(timeout=60), record_log_of(gateway).status()


def chat(
    gateway: Gateway, text: str, key: str | None = None, request_id: str | None = None, **extra: Any
) -> httpx.Response:
    headers = {"x-request-id": request_id} if request_id else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = {"model": "alpha", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers, timeout=60)


def admin(gateway: Gateway, path: str, key: str | None = None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(gateway.url + path, params=params, headers=headers, timeout=60)


@pytest.mark.timeout(180)
def test_a_client_request_id_cannot_hide_another_record(store_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.script = Script(content="fine")
    gateway = Gateway(
        parse_config(config(upstream.base_url, store_url, tmp_path / "journal", auth=True)), keep_record_config=True
    )
    gateway.server.start("/readyz", timeout=120)
    try:
        created = httpx.post(
            gateway.url + "/admin/keys",
            json={"tenant": "b", "role": "admin", "name": "b-admin"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        tenant_b = created.json()["secret"]
        # An unauthenticated request names the id first; tenant B then uses it, twice (a retry).
        forged = chat(gateway, "no key", request_id="victim-1")
        first = chat(gateway, "tenant b asks", key=tenant_b, request_id="victim-1")
        retry = chat(gateway, "tenant b asks again", key=tenant_b, request_id="victim-1")
        assert (forged.status_code, first.status_code, retry.status_code) == (401, 200, 200)
        ids = [r.headers["x-request-id"] for r in (forged, first, retry)]
        assert len(set(ids)) == 3 and "victim-1" not in ids  # the gateway's own ids, one per record
        flush(gateway)
        found = admin(gateway, "/admin/requests", ADMIN_KEY, client_request_id="victim-1").json()["data"]
        assert {r["id"] for r in found} == set(ids)
        assert {r["id"] for r in found if r["status"] == 200} == set(ids[1:])
        own = admin(gateway, "/admin/requests", tenant_b, client_request_id="victim-1").json()["data"]
        assert {r["id"] for r in own} == set(ids[1:])  # B sees both of its records, not the forged one
        detail = admin(gateway, f"/admin/requests/{ids[1]}", tenant_b).json()
        assert detail["client_request_id"] == "victim-1" and detail["status"] == 200
        assert detail["input_text"] == "tenant b asks"
    finally:
        gateway.server.stop()


@pytest.mark.timeout(180)
def test_hostile_bodies_are_answered_and_recorded(gateway_on: Gateway) -> None:
    sent = {
        "nul": chat(gateway_on, "before\u0000after", request_id="nul-1", user="u\u0000v"),
        "bigint": chat(gateway_on, "seeded", request_id="bigint-1", seed=2**70, unknown_field=-(2**80)),
        "nested": chat(gateway_on, "meta", request_id="nested-1", metadata={"n": "x" * 10}, extra={"deep": [2**65]}),
    }
    sent["surrogate"] = httpx.post(  # a lone surrogate escape: not JSON a parser accepts, still recorded
        gateway_on.base_url + "/chat/completions",
        content=b'{"model": "alpha", "messages": [{"role": "user", "content": "x\\ud800y"}]}',
        headers={"content-type": "application/json"},
        timeout=60,
    )
    for name, response in sent.items():
        assert response.status_code < 500, (name, response.text)
    flush(gateway_on)
    for name, response in sent.items():
        got = admin(gateway_on, f"/admin/requests/{response.headers['x-request-id']}")
        assert got.status_code == 200, (name, got.text)
        assert got.json()["status"] == response.status_code
    nul = admin(gateway_on, f"/admin/requests/{sent['nul'].headers['x-request-id']}").json()
    assert nul["input_text"] == "before\ufffdafter" and nul["user_id"] == "u\ufffdv"
    ready = admin(gateway_on, "/readyz").json()
    assert ready["status"] == "ready" and ready["record"]["rejected"]["pending"] == 0


BAD_PARAMS = [
    ("/admin/requests", "q", "\u0000"),
    ("/admin/requests", "q", "\u0000abc"),
    ("/admin/requests", "model", "a\u0000"),
    ("/admin/requests", "user", "\u0000"),
    ("/admin/requests", "tenant", "\u0000"),
    ("/admin/requests", "deployment", "\u0000"),
    ("/admin/requests", "client_request_id", "x\u0000"),
    ("/admin/requests", "tag", "k\u0000=v"),
    ("/admin/requests", "tag", "k=\u0000"),
    ("/admin/requests", "cursor", "\u0000"),
    ("/admin/requests", "cursor", "bmFufGFiYw=="),  # "nan|abc"
    ("/admin/requests", "cursor", "MXxhAGI="),  # "1|a\0b"
    ("/admin/requests", "since", "nan"),
    ("/admin/requests", "until", "inf"),
    ("/admin/requests", "stored_since", "1e400"),
    ("/admin/requests", "since", "99999999999999999999w"),
    ("/admin/requests", "limit", "1e400"),
    ("/admin/requests", "limit", "nan"),
    ("/admin/requests", "min_latency_ms", "nan"),
    ("/admin/requests", "max_cost", "-inf"),
    ("/admin/requests/export", "q", "\u0000"),
    ("/admin/requests/export", "since", "nan"),
    ("/admin/usage", "since", "nan"),
    ("/admin/usage", "since", "1e400"),
    ("/admin/usage", "until", "inf"),
    ("/admin/usage", "since", "-1e400"),
    ("/admin/usage", "since", "1e300"),
    ("/admin/usage", "since", "0001-01-01T00:00:00+23:59"),
    ("/admin/usage", "tenant", "\u0000"),
    ("/admin/audit", "limit", "\u00b2"),
    ("/admin/audit", "limit", "1e400"),
    ("/admin/audit/verify", "anchor", "\u00b2:" + "a" * 64),
    ("/admin/audit/verify", "anchor", "99999999999999999999999:" + "a" * 64),
    ("/admin/errors", "since", "nan"),
    ("/admin/errors", "limit", "\u00b2"),
    ("/admin/feedback/summary", "since", "inf"),
    ("/admin/stats/timeseries", "since", "-1e400"),
    ("/admin/stats/timeseries", "step", "nan"),
    ("/admin/stats/timeseries", "step", "1e400"),
]


@pytest.mark.timeout(180)
def test_bad_admin_query_parameters_are_400_naming_them(gateway_on: Gateway) -> None:
    chat(gateway_on, "one row, so a match-everything bug would show")
    flush(gateway_on)
    for path, name, value in BAD_PARAMS:
        response = admin(gateway_on, path, **{name: value})
        assert response.status_code == 400, (path, name, value, response.status_code, response.text)
        error = response.json()["error"]
        # NUL may be refused for the whole URL before the route (param "query") or by the route itself.
        named = (name, "query") if "\u0000" in value else (name,)
        assert error["type"] == "invalid_request_error" and error["param"] in named, (path, name, value, error)
        assert set(error) >= {"message", "type", "param", "code"}
    for path in ("/admin/requests/a%00b", "/admin/requests/%00"):
        response = httpx.get(gateway_on.url + path, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["param"] in ("id", "path"), response.text
    # Values that are odd but valid still answer.
    for path, params in (
        ("/admin/requests", {"q": "ab"}),
        ("/admin/usage", {"since": "0", "until": "253402300799"}),
        ("/admin/requests", {"since": "1970-01-01T00:00:00Z", "limit": "1000"}),
    ):
        assert admin(gateway_on, path, **params).status_code == 200, (path, params)


@pytest.mark.timeout(240)
def test_refused_lines_show_in_readyz_and_metrics_and_replay_from_the_cli(
    gateway_on: Gateway, store_url: str, tmp_path: Path
) -> None:
    flush(gateway_on)  # migrated
    store = open_store(store_url)
    with store.connection() as conn:
        if store_url.startswith("postgres"):
            conn.execute("ALTER TABLE requests ADD CONSTRAINT refuse_beta CHECK (model <> 'beta')")
        else:
            conn.execute(
                "CREATE TRIGGER refuse_beta BEFORE INSERT ON requests WHEN new.model = 'beta' "
                "BEGIN SELECT RAISE(ABORT, 'beta refused'); END"
            )
    refused = chat(gateway_on, "to beta", request_id="replayed-1", model="beta")
    assert refused.status_code == 200
    assert wait_until(lambda: admin(gateway_on, "/readyz").json()["record"]["rejected"]["pending"] == 1, timeout=60)
    ready = admin(gateway_on, "/readyz").json()
    assert ready["status"] == "degraded" and ready["record"]["state"] == "degraded"
    assert "refuse" in ready["record"]["rejected"]["last_error"] or "CHECK" in ready["record"]["rejected"]["last_error"]
    metrics = admin(gateway_on, "/metrics").text
    assert "opsgate_records_rejected_total 1.0" in metrics and "opsgate_records_rejected_pending 1.0" in metrics
    # The operator lifts the cause and feeds the set-aside line back.
    with store.connection() as conn:
        if store_url.startswith("postgres"):
            conn.execute("ALTER TABLE requests DROP CONSTRAINT refuse_beta")
        else:
            conn.execute("DROP TRIGGER refuse_beta")
    store.close()

    def opsgate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "opsgate.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OPSGATE_CONFIG": str(tmp_path / "opsgate.yaml")},
            cwd=tmp_path,
        )

    replay = opsgate("logs", "replay-rejected", "--json")
    assert replay.returncode == 0, replay.stderr
    assert orjson.loads(replay.stdout) == {"stored": 1, "duplicates": 0, "still_rejected": 0, "unreadable": 0}
    found = opsgate("logs", "search", "--client-request-id", "replayed-1", "--json")
    assert found.returncode == 0, found.stderr
    assert [r["id"] for r in orjson.loads(found.stdout)["data"]] == [refused.headers["x-request-id"]]
    got = admin(gateway_on, f"/admin/requests/{refused.headers['x-request-id']}")
    assert got.status_code == 200 and got.json()["model"] == "beta"
    assert wait_until(lambda: admin(gateway_on, "/readyz").json()["status"] == "ready", timeout=30)
