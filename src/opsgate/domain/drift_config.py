"""Config for drift monitoring (``drift:``): sampling, windows, the tests' thresholds and the schedule.

Every bound is validated here, so a typo in YAML is a startup error, not a monitor that checks
every second or keeps a million embeddings per bucket.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from opsgate.domain.slo_config import duration_seconds

_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$")


def _duration(value: str, low: float, high: float, what: str) -> str:
    seconds = duration_seconds(value)
    if not low <= seconds <= high:
        raise ValueError(f"{what} must be from {low:g} s to {high:g} s, got {value}")
    return value.strip()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceWindow(_Strict):
    """What the current window is compared with: the window just before it, or a fixed baseline."""

    kind: Literal["trailing", "fixed"] = "trailing"
    window: str = Field("7d", description="trailing: its length, ending where the current window starts.")
    start: float | None = Field(None, ge=0, le=4e9, description="fixed: epoch seconds (inclusive).")
    end: float | None = Field(None, ge=0, le=4e9, description="fixed: epoch seconds (exclusive).")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        return _duration(value, 60, 366 * 86400, "reference.window")

    @model_validator(mode="after")
    def _fixed(self) -> ReferenceWindow:
        if self.kind == "fixed":
            if self.start is None or self.end is None:
                raise ValueError("a fixed reference needs start and end (epoch seconds)")
            if self.end <= self.start:
                raise ValueError("reference.end must be after reference.start")
        return self


class MinEffects(_Strict):
    """The smallest change worth an alarm, per kind of feature (big windows make everything significant)."""

    total_variation: float = Field(0.1, gt=0, le=1, description="categoricals: TV distance of the shares.")
    relative_change: float = Field(0.2, gt=0, le=100, description="numeric: |mean change| / reference mean.")
    rate_change: float = Field(0.05, gt=0, le=1, description="rates: absolute change (0.05 = 5 points).")
    mmd: float = Field(0.02, gt=0, le=2, description="embeddings: squared MMD (RBF kernel, median bandwidth).")


class MinSamples(_Strict):
    """Below these a check says ``insufficient`` (or leaves the feature out) instead of guessing."""

    requests: int = Field(100, ge=10, le=10_000_000)
    answers: int = Field(50, ge=10, le=10_000_000)
    embeddings: int = Field(40, ge=10, le=10_000)


class DriftConfig(_Strict):
    """Input/output drift per alias: sampling, windows, tests and the check schedule."""

    enabled: bool = False
    interval: str = Field("15m", description="How often the monitor checks every alias.")
    bucket: str = Field("1h", description="Width of a summary bucket; windows are whole buckets.")
    flush_interval: float = Field(30.0, ge=0.05, le=3600, description="Seconds between summary flushes.")
    current_window: str = "1d"
    reference: ReferenceWindow = ReferenceWindow()
    alpha: float = Field(0.01, gt=0, lt=0.5, description="Family-wise false-alarm rate of one check.")
    min_effect: MinEffects = MinEffects()
    min_samples: MinSamples = MinSamples()
    sample_rate: float = Field(1.0, ge=0, le=1, description="Share of records considered for embedding.")
    language_sample_rate: float = Field(
        0.2, ge=0, le=1, description="Share of prompts whose language is detected (py3langid: ~0.3-1.5 ms each)."
    )
    max_embeddings_per_second: float = Field(20.0, ge=0, le=10_000)
    reservoir: int = Field(64, ge=8, le=512, description="Embeddings kept per bucket, side and replica.")
    test_embeddings: int = Field(256, ge=20, le=2000, description="Embeddings per window in the MMD test.")
    permutations: int = Field(2000, ge=99, le=20_000, description="Most permutations of the MMD test.")
    embeddings: bool = Field(True, description="Embed prompts and answers (the embedded MiniLM).")
    embedding_model: str | None = Field(None, description="Model directory; None: the bundled MiniLM.")
    queue: int = Field(10_000, ge=10, le=1_000_000, description="Records waiting to be summarised; more drop.")
    queue_bytes: int = Field(
        32 * 1024 * 1024,
        ge=64 * 1024,
        le=4 * 1024**3,
        description="Bytes the waiting records may hold (each keeps its lengths and ~2 KB of its texts); more drop.",
    )
    manual_check_interval: float = Field(
        10.0,
        ge=0,
        le=86_400,
        description="Least seconds between a tenant admin's manual checks of one alias (operators: no interval).",
    )
    per_tenant: bool = Field(False, description="Also check each tenant of an alias on its own.")
    aliases: list[str] | None = Field(None, description="Aliases to check; None: every alias seen.")
    retention_days: int = Field(90, ge=1, le=3650, description="Summaries and checks kept this long.")

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        return _duration(value, 1, 7 * 86400, "interval")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return _duration(value, 1, 86400, "bucket")

    @field_validator("current_window")
    @classmethod
    def _current(cls, value: str) -> str:
        return _duration(value, 1, 90 * 86400, "current_window")

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) > 1000:
                raise ValueError("at most 1000 aliases")
            for alias in value:
                if not _ALIAS.match(alias):
                    raise ValueError(f"'{alias[:100]}' is not an alias name")
        return value

    @property
    def interval_seconds(self) -> float:
        """Seconds between checks."""
        return duration_seconds(self.interval)

    @property
    def bucket_seconds(self) -> int:
        """Width of one summary bucket in whole seconds."""
        return max(1, int(duration_seconds(self.bucket)))

    @property
    def current_seconds(self) -> float:
        """Length of the current window."""
        return duration_seconds(self.current_window)
