"""`opsgate bias` (built in the drift issue)."""

from __future__ import annotations

import click


@click.group("bias")
def bias_group() -> None:
    """Counterfactual bias audits of a model alias."""
