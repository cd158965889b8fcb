"""``opsgate slo status|report`` on a config without SLOs points at the example SLO files, which exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from opsgate.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [["slo", "status"], ["slo", "report"]])
def test_no_slos_points_at_the_examples(command: list[str]) -> None:
    result = CliRunner().invoke(cli, command, env={"COLUMNS": "200", "OPSGATE_CONFIG": ""})
    assert result.exit_code == 2
    assert "examples/slos.yaml" in result.output and "slo-example.yaml" in result.output
    assert (ROOT / "examples" / "slos.yaml").is_file()
    assert (ROOT / "src" / "opsgate" / "defaults" / "slo-example.yaml").is_file()
