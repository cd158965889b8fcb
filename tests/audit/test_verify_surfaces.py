"""``GET /admin/audit/verify`` and ``opsgate audit verify|list`` against a real gateway's SQLite log."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from opsgate.cli.main import cli
from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway, wait_until


@pytest.fixture()
def gateway(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "m"}
    started = start_gateway({"models": [{"name": "up", "deployments": [deployment]}]})
    yield started
    started.server.stop()


def config_file(gateway: Gateway, tmp_path: Path) -> Path:
    path = tmp_path / "opsgate.yaml"
    record = {"store": gateway.config.record.store, "journal_dir": str(tmp_path / "journal")}
    path.write_text(yaml.safe_dump({"record": record}))
    return path


def tamper(gateway: Gateway, statement: str) -> None:
    assert gateway.config.record.store is not None
    with sqlite3.connect(gateway.config.record.store.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        conn.execute(statement)


def test_gateway_start_is_audited_and_the_chain_verifies(gateway: Gateway, tmp_path: Path) -> None:
    # The start waits up to 2 s for the config_loaded entry, then lets it finish in the background (an
    # unreachable store must not hold a start up): on a loaded machine it may land just after ready.
    def audited() -> bool:
        return bool(httpx.get(gateway.url + "/admin/audit/verify").json()["entries"] >= 1)

    assert wait_until(audited, 60)
    report = httpx.get(gateway.url + "/admin/audit/verify").json()
    assert report["ok"] is True and report["entries"] == 1 and report["first_broken_seq"] is None
    [entry] = httpx.get(gateway.url + "/admin/audit").json()["data"]
    assert entry["action"] == "config_loaded" and entry["details"]["before_sha256"] is None

    runner = CliRunner()
    config = str(config_file(gateway, tmp_path))
    verified = runner.invoke(cli, ["audit", "verify", "--config", config])
    assert verified.exit_code == 0, verified.output
    assert f"head 1:{report['head_hash']}" in verified.output
    listed = runner.invoke(cli, ["audit", "list", "--json", "--config", config])
    assert listed.exit_code == 0 and '"action":"config_loaded"' in listed.output

    tamper(gateway, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")
    broken = httpx.get(gateway.url + "/admin/audit/verify").json()
    assert broken["ok"] is False and broken["first_broken_seq"] == 1
    failed = runner.invoke(cli, ["audit", "verify", "--json", "--config", config])
    assert failed.exit_code == 1 and '"first_broken_seq": 1' in failed.output


def test_anchor_parameter(gateway: Gateway) -> None:
    head = httpx.get(gateway.url + "/admin/audit/verify").json()
    anchored = httpx.get(gateway.url + "/admin/audit/verify", params={"anchor": f"1:{head['head_hash']}"})
    assert anchored.status_code == 200 and anchored.json()["ok"] is True
    wrong = httpx.get(gateway.url + "/admin/audit/verify", params={"anchor": f"1:{'0' * 64}"}).json()
    assert wrong["ok"] is False and wrong["first_broken_seq"] == 1
    bad = httpx.get(gateway.url + "/admin/audit/verify", params={"anchor": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "anchor"
    cli_bad = CliRunner().invoke(cli, ["audit", "verify", "--anchor", "nope"])
    assert cli_bad.exit_code == 2 and "SEQ:HASH" in cli_bad.output
