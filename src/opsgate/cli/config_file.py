"""Loading the config in a CLI command: problems printed with their paths, exit code 2."""

from __future__ import annotations

from rich.console import Console

from opsgate.domain.config import ConfigError, GatewayConfig, load_config

_stderr = Console(stderr=True)


def load_config_or_exit(path: str | None) -> GatewayConfig:
    """The config at ``path`` (the embedded default when None), or exit 2 listing every problem."""
    try:
        return load_config(path)
    except ConfigError as error:
        _stderr.print(f"[red]Invalid config[/red] {error.source}:")
        for problem in error.problems:
            _stderr.print(f"  - {problem}")
        raise SystemExit(2) from None
