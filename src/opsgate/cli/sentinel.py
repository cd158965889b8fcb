"""`opsgate sentinel` (built in the drift issue)."""

from __future__ import annotations

import click


@click.group("sentinel")
def sentinel_group() -> None:
    """Golden prompts against every deployment: baselines, runs, behaviour changes."""
