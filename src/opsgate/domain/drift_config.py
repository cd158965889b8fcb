"""Config for drift monitoring (``drift:``). Filled in by the drift engine (issue 15)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DriftConfig(BaseModel):
    """Input/output drift per alias: sampling, windows, tests and the check schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
