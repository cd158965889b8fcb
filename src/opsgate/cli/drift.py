"""`opsgate drift` (built in the drift issue)."""

from __future__ import annotations

import click


@click.group("drift")
def drift_group() -> None:
    """Input and output drift per alias: status and reports."""
