"""Config for evaluation (``eval:``): continuous evaluation of sampled live traffic.

eval:
  online:
    enabled: true
    sample: 0.02                 # share of each chat alias's successful requests scored
    models: {smollm2: {sample: 0.1, judge: smollm2}}   # per-alias overrides
    scorers: [refusal, pii_leak, toxicity, json_valid, length, confidence]
    judge: null                  # opt-in: a judge alias (its calls are recorded, purpose=eval)
    queue_size: 1000             # samples waiting; beyond it they are dropped and counted
    queue_bytes: 33554432        # bytes the waiting (and scoring) samples may hold; beyond it dropped
    max_per_second: 20           # samples admitted per second; beyond it dropped and counted
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
ONLINE_SCORERS = ("refusal", "pii_leak", "toxicity", "json_valid", "length", "confidence")


def duration_seconds(value: str) -> float:
    """``30s``, ``5m``, ``1h``, ``7d`` as seconds."""
    match = _DURATION.match(value.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"'{value}' is not a duration like 5m, 1h or 7d")
    return float(match.group(1)) * _SECONDS[match.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnlineModelConfig(_Strict):
    """Per-alias overrides of the online sampler."""

    sample: float | None = Field(None, ge=0, le=1)
    judge: str | None = None


class OnlineEvalConfig(_Strict):
    """Score a sample of live answers after they are sent, off the request path."""

    enabled: bool = False
    sample: float = Field(0.02, ge=0, le=1, description="Share of successful chat/completion requests scored.")
    models: dict[str, OnlineModelConfig] = Field(default_factory=dict)
    scorers: list[str] = Field(default_factory=lambda: list(ONLINE_SCORERS))
    judge: str | None = Field(None, description="Opt-in judge alias for every sampled answer.")
    judge_repeats: int = Field(1, ge=1, le=10)
    judge_api_key: SecretStr | None = Field(None, description="Key for the judge's calls when auth is on.")
    queue_size: int = Field(1000, ge=1, le=1_000_000)
    queue_bytes: int = Field(
        32 * 1024 * 1024,
        ge=64 * 1024,
        le=4 * 1024**3,
        description="Bytes the waiting and scoring samples may hold (each keeps its answer and ~8 KB of "
        "its prompt); more drop, counted.",
    )
    max_per_second: float = Field(20.0, gt=0)
    flush_seconds: float = Field(1.0, gt=0, le=60)
    quality_scorer: str = Field("quality", description="The score the eval_degradation SLI follows.")
    window: str = Field("1h", description="Recent window compared with the baseline.")
    baseline_window: str = Field("7d", description="The window before it, taken as normal.")
    min_samples: int = Field(20, ge=1, description="Fewer scored samples in either window: no measurement.")
    measure_interval_seconds: float = Field(60.0, gt=0)

    @field_validator("scorers")
    @classmethod
    def _known(cls, scorers: list[str]) -> list[str]:
        unknown = [s for s in scorers if s not in ONLINE_SCORERS]
        if unknown:
            raise ValueError(f"'{unknown[0]}' is not an online scorer ({', '.join(ONLINE_SCORERS)})")
        return scorers

    @field_validator("window", "baseline_window")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value.strip()

    def rate_for(self, alias: str) -> float:
        """The sample share for ``alias``."""
        override = self.models.get(alias)
        if override is not None and override.sample is not None:
            return override.sample
        return self.sample

    def judge_for(self, alias: str) -> str | None:
        """The judge alias for ``alias``'s samples (None: no judge)."""
        override = self.models.get(alias)
        if override is not None and override.judge is not None:
            return override.judge
        return self.judge


class EvalConfig(_Strict):
    """Evaluation settings."""

    online: OnlineEvalConfig = OnlineEvalConfig()
