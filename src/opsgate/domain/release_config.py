"""Config of releases and experiments: how often replicas look for changes, shadow and rollback bounds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoRollbackConfig(_Strict):
    """Roll a canary back by itself when it burns its error budget fast or is worse on guard or quality."""

    enabled: bool = True
    interval_seconds: float = Field(15.0, gt=0, le=3600)
    slo_target: float = Field(0.99, gt=0, lt=1, description="Availability target whose budget the canary burns.")
    long_window: str = Field("1h", description="The burn-rate rule's windows and threshold (the page rule).")
    short_window: str = "5m"
    burn_rate: float = Field(14.4, gt=0)
    min_requests: int = Field(20, ge=1, description="Canary requests the short window needs before judging.")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Sequential test level for guard and quality rates.")


class ReleasesConfig(_Strict):
    """Releases resolved from a cache refreshed by polling the database's change counter."""

    enabled: bool = True
    poll_seconds: float = Field(1.0, gt=0, le=60)
    shadow_max_in_flight: int = Field(4, ge=1, le=256)
    auto_rollback: AutoRollbackConfig = AutoRollbackConfig()
