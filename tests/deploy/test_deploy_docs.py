"""docs/deploy.md stays true: its settings table is what ``opsgate serve`` reads, and the files it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import click

from opsgate.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DOC = (ROOT / "docs/deploy.md").read_text()


def test_the_settings_table_is_what_serve_reads() -> None:
    serve = cli.commands["serve"]
    read = {str(p.envvar) for p in serve.params if isinstance(p, click.Option) and p.envvar}
    table = set(re.findall(r"^\| `(OPSGATE_[A-Z_]+)`(?:, `(OPSGATE_[A-Z_]+)`)?", DEPLOY_DOC, re.M))
    documented = {name for row in table for name in row if name}
    assert documented == read


def test_every_deploy_file_named_exists() -> None:
    named = set(
        re.findall(
            r"(?<![\w/])(deploy/(?:docker|kubernetes|prometheus|grafana)[A-Za-z0-9_./-]*[A-Za-z0-9_])", DEPLOY_DOC
        )
    )
    assert len(named) > 8
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == []


def test_migrate_and_reload_as_documented() -> None:
    migrate = cli.get_command(click.Context(cli), "migrate")  # loaded lazily
    assert migrate is not None
    assert "--check" in {p.name and f"--{p.name}" for p in migrate.params}
    assert "POST /admin/config/reload" in DEPLOY_DOC or "/admin/config/reload" in DEPLOY_DOC
    from opsgate.server.reload import RESTART_ONLY

    restart_only = re.search(r"Restart-only \(refused by a reload, naming the section\): (.*?) —", DEPLOY_DOC, re.S)
    assert restart_only is not None
    assert set(re.findall(r"`(\w+)`", restart_only.group(1))) == set(RESTART_ONLY)
