"""``opsgate drift status|report|check`` against a real store from a config file, and a gateway URL."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.drift.engine import Span, run_check
from opsgate.drift.history import DriftHistory
from opsgate.drift.summary import WindowSummary
from opsgate.drift.windows import BucketRow, WindowStore
from opsgate.store.record_log import open_store
from tests.drift.conftest import config, models, observations
from tests.drift.traffic import mixed
from tests.support import free_port

HOUR = 3600


def summary(seed: int, n: int, **shares: float) -> WindowSummary:
    out = WindowSummary(capacity=16)
    for obs in observations(mixed(random.Random(seed), n, **shares)):
        out.add(obs)
    return out


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path}/requests.db"
    store = open_store(url)
    history = DriftHistory(store)
    settings = config(embeddings=False)
    history.add(
        run_check(settings, "chat-model", None, summary(1, 400), summary(2, 400, de=0.4), Span(0, 1), Span(1, 2))
    )
    history.add(run_check(settings, "quiet-model", None, summary(3, 400), summary(4, 400), Span(0, 1), Span(1, 2)))
    store.close()
    path = tmp_path / "gateway.yaml"
    settings_file = {
        "record": {"store": url},
        "models": models("chat-model", "quiet-model"),
        "drift": {"enabled": True, "embeddings": False},
    }
    path.write_text(json.dumps(settings_file))
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["drift", *args])
    return result.exit_code, result.output


def test_status_table_and_json(config_file: Path) -> None:
    code, out = run("status", "--config", str(config_file))
    assert code == 0 and "chat-model" in out and "quiet-model" in out and "DRIFT" in out and "ok" in out
    assert "'de'" in out  # what moved, as a sentence
    code, out = run("status", "--config", str(config_file), "--json")
    rows = json.loads(out)
    assert {r["alias"]: r["drifted"] for r in rows} == {"chat-model": True, "quiet-model": False}


def test_report_formats(config_file: Path, tmp_path: Path) -> None:
    code, out = run("report", "--alias", "chat-model", "--format", "md", "--config", str(config_file))
    assert code == 0 and "de" in out and "#" in out
    code, out = run("report", "--alias", "chat-model", "--format", "json", "--config", str(config_file))
    assert code == 0 and json.loads(out)["alias"] == "chat-model"
    page = tmp_path / "r.html"
    code, out = run(
        "report", "--alias", "chat-model", "--format", "html", "--output", str(page), "--config", str(config_file)
    )
    assert code == 0 and page.read_text().lstrip().lower().startswith("<!doctype html")
    code, out = run("report", "--alias", "missing", "--config", str(config_file))
    assert code == 1 and "no drift checks of missing" in out


def test_check_exit_code_says_drift(config_file: Path) -> None:
    store = open_store(json.loads(config_file.read_text())["record"]["store"])
    windows = WindowStore(store)
    import time

    now = time.time()
    windows.write("r", [BucketRow("chat-model", int((now - 30 * HOUR) // HOUR * HOUR), "", summary(5, 400))])
    windows.write("r", [BucketRow("chat-model", int(now // HOUR * HOUR), "", summary(6, 400, de=0.5))])
    store.close()
    code, out = run("check", "--alias", "chat-model", "--config", str(config_file))
    assert code == 3 and "DRIFT" in out and "share of 'de' prompts" in out
    code, out = run("check", "--alias", "quiet-model", "--config", str(config_file))
    assert code == 0 and "insufficient data" in out


def test_clear_errors(tmp_path: Path) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text('{"record": {"store": null}}')
    code, out = run("status", "--config", str(bare))
    assert code == 2 and "record.store is not set" in out
    code, out = run("status", "--url", f"http://127.0.0.1:{free_port()}/v1")
    assert code == 1 and "cannot reach the gateway" in out


@pytest.mark.parametrize("alias", ["FAKE-1", "<img src=x onerror=alert(1)>", "ghost\x00nul"])
def test_check_refuses_an_alias_that_is_not_configured(config_file: Path, alias: str) -> None:
    code, out = run("check", "--alias", alias, "--config", str(config_file))
    assert code == 2 and "not a model alias in the config" in out and "Traceback" not in out, out
    store = open_store(json.loads(config_file.read_text())["record"]["store"])
    try:
        assert {r["alias"] for r in DriftHistory(store).list()} == {"chat-model", "quiet-model"}  # nothing stored
    finally:
        store.close()


def test_report_to_a_missing_directory_is_a_clear_error(config_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.md"
    result = CliRunner().invoke(
        cli, ["drift", "report", "--alias", "chat-model", "--output", str(target), "--config", str(config_file)]
    )
    assert result.exit_code == 2, result.output
    assert "--output" in result.output and "cannot write" in result.output and "No such file" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback


def test_check_refuses_a_tenant_that_cannot_be_stored(config_file: Path) -> None:
    code, out = run("check", "--alias", "chat-model", "--tenant", "ev\x00il", "--config", str(config_file))
    assert code == 2 and "--tenant" in out and "Traceback" not in out, out
