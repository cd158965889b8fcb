"""The README's releases example runs: every command of its block, and its config parses."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from opsgate.domain.config import parse_config
from opsgate.store.record_log import open_store

README = (Path(__file__).parent.parent.parent / "README.md").read_text()


def test_readme_release_commands_run(tmp_path: Path) -> None:
    [block] = [b for b in re.findall(r"```sh\n(.*?)```", README, flags=re.S) if "opsgate release canary" in b]
    config = tmp_path / "opsgate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [{"name": "smollm2", "deployments": [{"type": "llama_cpp"}]}],
                "record": {"store": f"sqlite:///{tmp_path}/requests.db", "journal_dir": f"{tmp_path}/journal"},
            }
        )
    )
    open_store(f"sqlite:///{tmp_path}/requests.db").close()  # the gateway's store: these commands never create it
    opsgate = str(Path(sys.executable).parent / "opsgate")
    experiment = ""
    for line in block.strip().splitlines():
        args = shlex.split(line, comments=True)
        assert args[0] == ".venv/bin/opsgate"
        args = [a.replace("EXPERIMENT_ID", experiment) for a in args[1:]]
        result = subprocess.run(
            [opsgate, *args, "--config", str(config)], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert result.returncode == 0, (line, result.stdout, result.stderr)
        found = re.search(r"experiment (exp_[0-9a-f]+)", result.stdout)
        if found:
            experiment = found.group(1)
    assert experiment


def test_readme_releases_config_parses() -> None:
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", README, flags=re.S) if b.startswith("releases:")]
    parse_config(yaml.safe_load(block))
