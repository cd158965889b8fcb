"""Loading the config in a CLI command: problems printed with their paths, exit code 2."""

from __future__ import annotations

from typing import NoReturn

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
