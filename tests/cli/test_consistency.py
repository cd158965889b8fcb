"""One CLI: ``--url`` for a gateway everywhere (``--base-url`` still accepted, hidden), one ``--since``
default, and ids shown whole in tables at 80 columns."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from opsgate.cli.logs import _records_table
from opsgate.cli.main import cli
from opsgate.cli.options import DEFAULT_SINCE

OPSGATE = [sys.executable, "-m", "opsgate.cli.main"]
GATEWAY_COMMANDS = [["chat"], ["models"], ["load"], ["errors"], ["redteam", "run"]]


def command(path: list[str]) -> click.Command:
    found: click.Command = cli
    for name in path:
        assert isinstance(found, click.Group)
        sub = found.get_command(click.Context(found), name)  # subcommands are loaded lazily
        assert sub is not None, name
        found = sub
    return found


@pytest.mark.parametrize("path", GATEWAY_COMMANDS, ids=" ".join)
def test_every_gateway_option_is_spelled_url(path: list[str]) -> None:
    options = {name: param for param in command(path).params if isinstance(param, click.Option) for name in param.opts}
    assert "--url" in options and options["--url"].envvar == "OPSGATE_URL"
    assert "--base-url" in options and options["--base-url"].hidden  # the old spelling, still accepted
    help_text = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "200"}).output
    assert "--url" in help_text and "--base-url" not in help_text


def test_the_hidden_alias_still_reaches_the_gateway() -> None:
    # redteam run used --base-url: against nothing listening, both spellings fail the same way.
    results = [
        CliRunner().invoke(cli, ["redteam", "run", "-m", "x", option, "http://127.0.0.1:9/v1", "--case", "nope"])
        for option in ("--url", "--base-url")
    ]
    assert results[0].exit_code == results[1].exit_code == 2
    assert "No case matches" in results[0].output and "No case matches" in results[1].output


@pytest.mark.parametrize("path", [["errors"], ["usage"]], ids=" ".join)
def test_report_commands_share_one_since_default(path: list[str]) -> None:
    since = next(p for p in command(path).params if p.name == "since")
    assert since.default == DEFAULT_SINCE


def test_record_ids_are_whole_at_80_columns() -> None:
    rows: list[dict[str, Any]] = [
        {"ts": time.time(), "id": f"{'a' * 16}{n:08x}", "model": "a-long-model-name", "status": 200,
         "user_id": "someone@example.com", "latency_ms": 12.5, "prompt_tokens": 7, "completion_tokens": 5,
         "cost": 0.0001, "input_text": "a question long enough to need wrapping in a narrow terminal"}
        for n in range(3)
    ]  # fmt: skip
    console = Console(width=80, record=True)
    console.print(_records_table(rows))
    text = console.export_text()
    assert all(row["id"] in text for row in rows), text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_key_ids_are_whole_at_80_columns(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    store = f"sqlite:///{tmp_path / 'requests.db'}"
    config.write_text(yaml.safe_dump({"record": {"store": store, "journal_dir": str(tmp_path / "j")}}))
    env = {**os.environ, "COLUMNS": "80", "OPSGATE_CONFIG": str(config)}
    assert subprocess.run([*OPSGATE, "migrate"], env=env, capture_output=True, timeout=120).returncode == 0
    ids = []
    for name in ("first-key-with-a-long-name", "second"):
        created = subprocess.run(
            [*OPSGATE, "keys", "create", "--tenant", "acme-corporation", "--name", name, "--json"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        ids.append(orjson.loads(created.stdout)["id"])
    listed = subprocess.run([*OPSGATE, "keys", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert all(key_id in listed.stdout for key_id in ids), listed.stdout
