"""``opsgate keys create|rotate`` hold the same bounds as ``POST /admin/keys`` (probe e, p15): ``--models``
names distinct configured aliases, and a tenant's active keys stop at ``auth.max_keys_per_tenant``."""

from __future__ import annotations

from pathlib import Path

import orjson
import yaml
from click.testing import CliRunner

from opsgate.cli.keys import keys
from tests.cli.test_store_resolution import run


def _config(tmp_path: Path) -> str:
    config = tmp_path / "gateway.yaml"
    deployment = {"type": "openai", "base_url": "http://127.0.0.1:9", "model": "m"}
    config.write_text(
        yaml.safe_dump(
            {
                "record": {"store": f"sqlite:///{tmp_path / 'requests.db'}", "journal_dir": str(tmp_path / "j")},
                "auth": {"max_keys_per_tenant": 2},
                "models": [{"name": "alpha", "deployments": [deployment]}],
            }
        )
    )
    assert run(["migrate", "--config", str(config)], tmp_path).returncode == 0
    return str(config)


def test_cli_keys_hold_the_models_bounds_and_the_tenant_cap(tmp_path: Path) -> None:
    config = _config(tmp_path)
    cli = CliRunner()

    def create(*extra: str) -> tuple[int, str]:
        result = cli.invoke(keys, ["create", "--config", config, "--tenant", "acme", "--json", *extra])
        return result.exit_code, result.output

    assert create("--models", "nope")[0] != 0  # not a configured alias
    assert "not a configured model alias" in create("--models", "nope")[1]
    assert "twice" in create("--models", "alpha,alpha")[1]
    code, output = create("--models", "alpha")
    assert code == 0, output
    first = orjson.loads(output)["id"]
    assert create()[0] == 0
    code, output = create()
    assert code != 0 and "max_keys_per_tenant" in output, output  # the third active key of acme
    assert cli.invoke(keys, ["create", "--config", config, "--json"]).exit_code == 0  # operator keys: not counted
    rotated = cli.invoke(keys, ["rotate", "--config", config, first, "--grace", "1h"])
    assert rotated.exit_code == 0, rotated.output  # a rotation replaces a key: allowed at the cap
    assert cli.invoke(keys, ["revoke", "--config", config, first]).exit_code == 0
    assert create()[0] != 0  # still 2 active: the rotated key and the second
