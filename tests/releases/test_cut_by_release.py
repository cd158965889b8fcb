"""The log is cut by what the release stage applied (issue 14: "search, usage and SLOs can be cut by
prompt version"): search filters and usage groups by prompt version, release and experiment arm, on
both stores and through the admin API and CLI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.store.query import query_from_params
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore
from tests.store.conftest import fresh_pg_schema
from tests.support import Gateway, start_gateway

ROWS = [  # id, prompt, version, release, experiment, arm, status, cost
    ("r1", "support", 1, "rel_a", "exp_1", "control", 200, 0.5),
    ("r2", "support", 1, "rel_a", "exp_1", "control", 500, None),
    ("r3", "support", 2, "rel_b", "exp_1", "canary", 200, 1.0),
    ("r4", None, None, None, None, None, 200, 0.25),
]


def fill(store: SqlRecordStore) -> None:
    now = time.time()
    with store.connection() as conn, store.transaction(conn):
        for rid, prompt, version, release, experiment, arm, status, cost in ROWS:
            store.execute(
                conn,
                "INSERT INTO requests (id, ts, endpoint, model, status, prompt, prompt_version, release_id, "
                "experiment, arm, cost, prompt_tokens, completion_tokens, latency_ms) "
                "VALUES (?, ?, 'chat', 'up', ?, ?, ?, ?, ?, ?, ?, 10, 5, 20.0)",
                [rid, now, status, prompt, version, release, experiment, arm, cost],
            )


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlRecordStore]:
    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path}/cut.db")
        fill(opened)
        yield opened
        opened.close()
        return
    with fresh_pg_schema() as url:
        opened = open_store(url)
        fill(opened)
        yield opened
        opened.close()


def ids(store: SqlRecordStore, **params: Any) -> list[str]:
    rows, _ = store.search(query_from_params(params))
    return sorted(row["id"] for row in rows)


def test_search_by_prompt_version_release_and_arm(store: SqlRecordStore) -> None:
    assert ids(store, prompt="support") == ["r1", "r2", "r3"]
    assert ids(store, prompt="support", prompt_version="1") == ["r1", "r2"]
    assert ids(store, release="rel_b") == ["r3"]
    assert ids(store, experiment="exp_1", arm="canary") == ["r3"]


def test_usage_by_prompt_version_release_and_arm(store: SqlRecordStore) -> None:
    by_version = {row["prompt_version"]: row for row in store.usage("prompt_version", None, None)}
    assert set(by_version) == {"support@1", "support@2"}  # records without a prompt are not a group
    assert by_version["support@1"]["requests"] == 2 and by_version["support@1"]["errors"] == 1
    assert by_version["support@1"]["cost"] == 0.5 and by_version["support@1"]["priced_requests"] == 1
    assert [row["release"] for row in store.usage("release", None, None)] == ["rel_a", "rel_b"]
    arms = {row["experiment_arm"]: row["requests"] for row in store.usage("experiment_arm", None, None)}
    assert arms == {"exp_1/canary": 1, "exp_1/control": 2}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"prompt_version": "0"}, "prompt_version"),
        ({"prompt_version": "1.5"}, "prompt_version"),
        ({"prompt_version": "nan"}, "prompt_version"),
        ({"release": "a\x00b"}, None),
    ],
)
def test_bad_filters_are_client_errors(params: dict[str, str], param: str | None) -> None:
    from opsgate.domain.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError) as raised:
        query_from_params(params)
    if param is not None:
        assert raised.value.param == param


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    url = f"sqlite:///{tmp_path}/gw.db"
    served = start_gateway({"record": {"store": url}, "models": []})
    fill(open_store(served.config.record.store or url))
    yield served
    served.server.stop()


def test_the_admin_api_and_cli_cut_by_prompt_version(gateway: Gateway, tmp_path: Path) -> None:
    usage = httpx.get(gateway.url + "/admin/usage", params={"by": "prompt_version", "since": "1d"}, timeout=30)
    assert usage.status_code == 200, usage.text
    assert [row["prompt_version"] for row in usage.json()["data"]] == ["support@1", "support@2"]
    found = httpx.get(gateway.url + "/admin/requests", params={"prompt": "support", "prompt_version": 2}, timeout=30)
    assert found.status_code == 200 and [row["id"] for row in found.json()["data"]] == ["r3"], found.text
    bad = httpx.get(gateway.url + "/admin/usage", params={"by": "prompt"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "by"
    config = tmp_path / "cli.yaml"
    config.write_text(f"record:\n  store: {gateway.config.record.store}\n")
    result = CliRunner().invoke(cli, ["usage", "--by", "release", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "rel_a" in result.output and "rel_b" in result.output
