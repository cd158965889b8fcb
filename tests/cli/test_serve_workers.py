"""``opsgate serve --workers N`` gives uvicorn's supervisor a worker health-check timeout long enough for a
worker still loading its models on a busy CPU (uvicorn's own 5 s killed and restarted such workers in a loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.domain.config import ConfigError, parse_config

CONFIG = """
models:
  - name: up
    deployments:
      - {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}
record: {store: 'sqlite:///%s'}
"""


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> dict[str, Any]:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG % (tmp_path / "records.db") + extra)
    for name in ("OPSGATE_CONFIG", "OPSGATE_LOG_LEVEL", "OPSGATE_WORKERS"):
        monkeypatch.setenv(name, "")  # serve sets these for its workers: restored after the test
        monkeypatch.delenv(name)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    result = CliRunner().invoke(cli, ["serve", "--config", str(path), "--workers", "2", "--port", "9"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    return calls[0]


def test_several_workers_get_a_minute_to_answer_the_health_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = _serve(tmp_path, monkeypatch)
    assert options["workers"] == 2
    assert options["timeout_worker_healthcheck"] == 60


def test_the_health_check_timeout_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = _serve(tmp_path, monkeypatch, "server: {worker_healthcheck_seconds: 120}\n")
    assert options["timeout_worker_healthcheck"] == 120


@pytest.mark.parametrize("value", [0, -1, 601, 1e9, 1.5, "soon", None])
def test_out_of_range_timeouts_are_refused_at_load(value: object) -> None:
    with pytest.raises(ConfigError, match="worker_healthcheck_seconds"):
        parse_config({"models": [], "server": {"worker_healthcheck_seconds": value}})
