"""The CLI reads the store the config names (``--config`` or ``OPSGATE_CONFIG``), and never creates one
for a read or a key command: run from another directory it says where it looked instead of opening a
new empty ``./.opsgate/requests.db``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import yaml

OPSGATE = [sys.executable, "-m", "opsgate.cli.main"]


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "OPSGATE_CONFIG"} | env | {"COLUMNS": "200"}
    return subprocess.run([*OPSGATE, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)


def test_key_and_read_commands_create_no_store(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in (["keys", "create", "--tenant", "acme", "--json"], ["keys", "list"], ["logs", "search"]):
        result = run(command, elsewhere)
        assert result.returncode != 0, result.stdout
        assert "no request log at" in result.stderr and "--config" in result.stderr, result.stderr
    assert not (elsewhere / ".opsgate").exists()


def test_the_store_comes_from_opsgate_config(tmp_path: Path) -> None:
    gateway_dir, elsewhere = tmp_path / "gateway", tmp_path / "elsewhere"
    gateway_dir.mkdir()
    elsewhere.mkdir()
    config = gateway_dir / "gateway.yaml"
    store = gateway_dir / "requests.db"
    config.write_text(yaml.safe_dump({"record": {"store": f"sqlite:///{store}", "journal_dir": str(tmp_path / "j")}}))
    assert run(["migrate", "--config", str(config)], gateway_dir).returncode == 0
    created = run(["keys", "create", "--tenant", "acme", "--json"], elsewhere, OPSGATE_CONFIG=str(config))
    assert created.returncode == 0, created.stderr
    key_id = orjson.loads(created.stdout)["id"]
    listed = run(["keys", "list", "--json", "--config", str(config)], gateway_dir)
    assert [key["id"] for key in orjson.loads(listed.stdout)] == [key_id]
    assert not (elsewhere / ".opsgate").exists()
