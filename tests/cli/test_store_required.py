"""``opsgate drift``, ``prompts``/``release``/``experiment`` and ``eval`` never create the record store:
pointed at a directory with no store (a relative default path run from elsewhere, or a config naming a
missing one) they exit non-zero saying where they looked, and leave no database file behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from opsgate.cli.main import cli

DRIFT = [["drift", "status"], ["drift", "report", "--alias", "chat"]]
RELEASES = [
    ["prompts", "list"],
    ["prompts", "create", "greeter", "--system", "You answer in one word."],
    ["release", "history", "chat"],
    ["experiment", "status", "exp_x"],
]
EVALS = [["eval", "runs"], ["eval", "dataset", "list"], ["eval", "gate", "--baseline", "a", "--candidate", "b"]]
COMMANDS = DRIFT + RELEASES + EVALS


def invoke(args: list[str]) -> Result:
    result = CliRunner(env={"COLUMNS": "400"}).invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception  # no traceback
    return result


def said(result: Result) -> str:
    return "".join(result.output.split())  # rich wraps long lines, inside a long path too


@pytest.fixture()
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    monkeypatch.chdir(directory)
    monkeypatch.delenv("OPSGATE_CONFIG", raising=False)
    return directory


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_the_default_relative_store_from_another_directory_is_refused(elsewhere: Path, args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code != 0, result.output
    assert "norequestlogat" in said(result) and "--config" in said(result), result.output
    assert not (elsewhere / ".opsgate").exists()


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_config_naming_a_missing_store_is_refused(elsewhere: Path, args: list[str]) -> None:
    missing = elsewhere / "wrong-dir" / "requests.db"
    config = elsewhere / "gateway.yaml"
    config.write_text(yaml.safe_dump({"record": {"store": f"sqlite:///{missing}"}}))
    result = invoke([*args, "--config", str(config)])
    assert result.exit_code != 0, result.output
    assert f"norequestlogat{missing}" in said(result) and str(config) in said(result), result.output
    assert not missing.parent.exists()


@pytest.mark.parametrize("args", EVALS, ids=" ".join)
def test_eval_says_bad_input_not_gate_failed(elsewhere: Path, args: list[str]) -> None:
    assert invoke(args).exit_code == 2  # 1 is "the gate failed" to a CI job


def test_the_commands_work_on_a_store_that_exists(elsewhere: Path) -> None:
    config = elsewhere / "gateway.yaml"
    store = elsewhere / "data" / "requests.db"
    models = [{"name": "chat", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}]}]
    record = {"store": f"sqlite:///{store}", "journal_dir": str(elsewhere / "data" / "journal")}
    config.write_text(yaml.safe_dump({"models": models, "record": record}))
    assert invoke(["migrate", "--config", str(config)]).exit_code == 0
    created = invoke(["prompts", "create", "greeter", "--system", "You answer in one word.", "--config", str(config)])
    assert created.exit_code == 0 and "created" in created.output, created.output
    listed = invoke(["prompts", "list", "--config", str(config)])
    assert listed.exit_code == 0 and "greeter" in listed.output, listed.output
    assert invoke(["drift", "status", "--config", str(config), "--json"]).exit_code == 0
    assert invoke(["eval", "runs", "--config", str(config)]).exit_code == 0
    assert invoke(["eval", "dataset", "list", "--config", str(config)]).exit_code == 0
    assert not (elsewhere / ".opsgate").exists()
