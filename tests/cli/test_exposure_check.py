"""``opsgate serve`` without auth binds only loopback; ``config check`` never prints URL credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import uvicorn
from click.testing import CliRunner

from opsgate.cli.main import _check_exposure, cli
from opsgate.cli.serve_checks import is_loopback
from opsgate.domain.config import parse_config

UPSTREAM = {"type": "openai", "base_url": "http://u:pw-777@up.example/v1", "model": "m"}
MODELS = [{"name": "up", "deployments": [UPSTREAM]}]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("127.evil.example", False),  # a name, and names resolve anywhere
        ("localhost.evil.example", False),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("127.0.0.1.nip.io", False),
    ],
)
def test_only_loopback_literals_and_localhost_count(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_without_auth_refuses_a_name_that_looks_like_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(args))
    with pytest.raises(click.ClickException, match="reachable from other machines"):
        _check_exposure(parse_config({"models": MODELS}), "127.evil.example")
    result = CliRunner().invoke(cli, ["serve", "--host", "127.evil.example", "--port", "9"])
    assert result.exit_code != 0 and not started


def test_config_check_redacts_url_credentials(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "models:\n  - name: up\n    deployments:\n"
        "      - {type: openai, base_url: 'http://u:pw-777@up.example/v1', model: m}\n"
    )
    result = CliRunner().invoke(cli, ["config", "check", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "pw-777" not in result.output and "u:***@up.example" in result.output
