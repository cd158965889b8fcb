"""Config for the behaviour-change sentinel (``sentinel:``). Filled in by the sentinel (issue 15)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SentinelConfig(BaseModel):
    """Golden prompts run on a schedule against every deployment, compared with a stored baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
