"""Config files from the CLI: YAML errors name the file and line, an empty file is an error, and
``opsgate config schema`` prints a JSON Schema that every example config satisfies."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.domain.config import interpolate_env

ROOT = Path(__file__).resolve().parents[2]


def check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["config", "check", str(path)], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models:\n  - name: x\n   bad: [\n")
    code, output = check(path)
    assert code == 2
    # Rich wraps at the width of the console it made on import (a long tmp path breaks mid-word).
    unwrapped = output.replace("\n", "")
    assert f"invalid YAML in {path}, line 3" in unwrapped and "<unicode string>" not in unwrapped


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "\n\n"])
def test_an_empty_config_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    code, output = check(path)
    assert code == 2 and "the file is empty" in output and "OK" not in output


def test_config_schema_validates_the_examples() -> None:
    result = CliRunner().invoke(cli, ["config", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"models", "server", "limits", "guard", "auth"} <= set(schema["properties"])
    validator = jsonschema.Draft202012Validator(schema)
    env = {"OPSGATE_ADMIN_KEY": "sk-admin-" + "a" * 40}
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        tree = interpolate_env(yaml.safe_load(path.read_text()), env)
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(tree)]
        assert not errors, (path.name, errors)
    wrong = validator.iter_errors({"server": {"port": "eighty"}, "nonsense": 1})
    assert len(list(wrong)) == 2
