"""Loading the config in a CLI command: problems printed with their paths, exit code 2."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from opsgate.domain.config import ConfigError, GatewayConfig, load_config

_stderr = Console(stderr=True)


def exit_listing_problems(what: str, source: object, problems: list[str]) -> NoReturn:
    """Print ``Invalid <what> <source>:`` and each problem on stderr, then exit 2 (bad input)."""
    _stderr.print(f"[red]Invalid {what}[/red] {source}:")
    for problem in problems:
        _stderr.print(f"  - {problem}")
    raise SystemExit(2)


def load_config_or_exit(path: str | None) -> GatewayConfig:
    """The config at ``path`` (the embedded default when None), or exit 2 listing every problem."""
    try:
        return load_config(path)
    except ConfigError as error:
        exit_listing_problems("config", error.source, error.problems)


def existing_store(config: GatewayConfig, config_path: str | None, purpose: str) -> str:
    """The config's ``record.store`` URL, which must already exist: a read or a key command that opened a
    new empty SQLite file (run from another directory, a relative path) would find nothing, or keep keys
    the gateway never sees. ``opsgate migrate`` (or the gateway's first start) creates the store."""
    source = config_path or "the embedded default config (pass --config or set OPSGATE_CONFIG)"
    store = config.record.store
    if store is None:
        raise click.UsageError(f"record.store is not set in {source}: there is no store for {purpose}.")
    if store.startswith("sqlite:///"):
        path = Path(store.removeprefix("sqlite:///"))
        if not path.exists():
            raise click.ClickException(
                f"no request log at {path.absolute()} (record.store in {source}, relative to {Path.cwd()}). "
                f"Run this where the gateway runs, or pass its --config; `opsgate migrate --config FILE` "
                f"creates a new store. Nothing was created for {purpose}."
            )
    return store
