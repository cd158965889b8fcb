"""Config for service level objectives and burn-rate alerts (``slo:`` and ``alerts:`` sections).

Shaped like the seed's SLO tables: an SLI, a target, a window, and optionally an SLA threshold
and a KPI label. Alert rules follow Google's SRE workbook (multi-window, multi-burn-rate).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

SliKind = Literal[
    "availability",
    "error_rate",
    "latency",
    "ttft",
    "throughput",
    "csat",
    "guard_detection",
    "eval_degradation",
    "data_freshness",
    "drift",
    "behaviour_change",
    "injection_rate",
    "pii_leak_rate",
    "toxicity_rate",
    "low_confidence_rate",
    "refusal_rate",
]
# Quality SLIs (slo/quality.py): the share of requests or answers a guard verdict or the refusal
# check flagged, from the rollups' quality counts. Lower is better; the target is the allowed share.
QUALITY_SLIS: frozenset[str] = frozenset(
    {"injection_rate", "pii_leak_rate", "toxicity_rate", "low_confidence_rate", "refusal_rate"}
)
# SLIs measured as a share of good (or bad) events: these have an error budget and burn rates.
RATIO_SLIS: frozenset[str] = frozenset({"availability", "error_rate", "latency", "ttft", "csat"}) | QUALITY_SLIS
# SLIs fed by POST /admin/slo/measurements (red-team runs, eval jobs, data pipelines) or by the
# drift monitor (``drift``: 1 when the scope's latest check alarmed) and the sentinel
# (``behaviour_change``: the share of golden prompts whose answer changed).
MEASURED_SLIS: frozenset[str] = frozenset(
    {"guard_detection", "eval_degradation", "data_freshness", "drift", "behaviour_change"}
)
# Measured SLIs whose target may be left out: 0, so any alarm or change is a miss.
ZERO_TARGET_SLIS: frozenset[str] = frozenset({"drift", "behaviour_change"})
# SLIs where a smaller value is better; the target is then an upper bound.
LOWER_IS_BETTER: frozenset[str] = (
    frozenset({"error_rate", "eval_degradation", "data_freshness", "drift", "behaviour_change"}) | QUALITY_SLIS
)
# SLIs whose value is a fraction from 0 to 1, so their target is too.
FRACTION_SLIS: frozenset[str] = frozenset({"guard_detection", "eval_degradation", "drift", "behaviour_change"})


MAX_DURATION_SECONDS = 400 * 86400  # windows past ~13 months outlive the rollups and overflow epoch maths


def duration_seconds(value: str) -> float:
    """``10s``, ``5m``, ``1h``, ``3d``, ``2w`` as seconds (up to 400 days); ValueError otherwise."""
    match = _DURATION.match(value.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"'{value}' is not a duration like 5m, 1h or 30d")
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"'{value}' is longer than 400 days")
    return seconds


def _check_duration(value: str) -> str:
    duration_seconds(value)
    return value.strip()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SloFilter(_Strict):
    """Which traffic an SLO covers; every field left out means all."""

    tenant: str | None = None
    model: str | None = None
    deployment: str | None = None


class SloDefinition(_Strict):
    """One objective: ``sli`` should meet ``target`` over a rolling ``window``.

    Targets are fractions for ratio SLIs (``0.999`` availability, ``0.001`` error rate, ``0.95`` of
    requests within ``threshold_ms``, ``0.9`` CSAT, ``0.01`` of answers refusing or leaking PII),
    requests per second for throughput, a fraction for guard detection, eval degradation and
    behaviour change, 0 or 1 for drift, and seconds of age for data freshness.
    """

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str | None = None
    sli: SliKind
    target: float = Field(ge=0)
    threshold_ms: float | None = Field(None, gt=0, description="latency/ttft: the bound a request must meet.")
    window: str = Field("30d", description="Rolling window, e.g. 30d.")
    filter: SloFilter = SloFilter()
    sla: float | None = Field(None, ge=0, description="Contractual threshold, usually looser than target.")
    kpi: str | None = Field(None, description="The business KPI this objective supports.")

    @model_validator(mode="before")
    @classmethod
    def _default_target(cls, data: Any) -> Any:
        # drift / behaviour_change: the target may be left out (0: any alarm or change is a miss).
        if isinstance(data, dict) and data.get("sli") in ZERO_TARGET_SLIS and data.get("target") is None:
            return {**data, "target": 0.0}
        return data

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        return _check_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> SloDefinition:
        if self.sli in ("latency", "ttft") and self.threshold_ms is None:
            raise ValueError(f"a {self.sli} SLO needs threshold_ms")
        if self.sli in RATIO_SLIS | FRACTION_SLIS and self.target > 1:
            raise ValueError(f"a {self.sli} target is a fraction from 0 to 1")
        if self.sli in RATIO_SLIS and self.sli not in LOWER_IS_BETTER and self.target >= 1:
            raise ValueError("a target of 1 leaves no error budget; use e.g. 0.999")
        return self

    @property
    def window_seconds(self) -> float:
        """The rolling window in seconds."""
        return duration_seconds(self.window)

    @property
    def is_ratio(self) -> bool:
        """Whether this SLI has an error budget (a share of good events)."""
        return self.sli in RATIO_SLIS

    @property
    def allowed_bad(self) -> float:
        """The share of bad events the target allows (the error budget as a fraction)."""
        return self.target if self.sli in LOWER_IS_BETTER else 1.0 - self.target


class SloConfig(_Strict):
    """The objectives the gateway tracks."""

    objectives: list[SloDefinition] = Field(default_factory=list)

    @field_validator("objectives")
    @classmethod
    def _unique(cls, objectives: list[SloDefinition]) -> list[SloDefinition]:
        names = [o.name for o in objectives]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"objective name '{name}' is used twice")
        return objectives


class BurnRateRule(_Strict):
    """Alert when the burn rate exceeds ``burn_rate`` over both windows."""

    severity: Literal["page", "ticket"]
    long_window: str
    short_window: str
    burn_rate: float = Field(gt=0)

    @field_validator("long_window", "short_window")
    @classmethod
    def _windows(cls, value: str) -> str:
        return _check_duration(value)


class WebhookConfig(_Strict):
    """Where alerts are POSTed: ``generic`` JSON or a ``slack`` incoming webhook (``{"text": …}``)."""

    url: str
    format: Literal["generic", "slack"] = "generic"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_seconds: float = Field(5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value


_DEFAULT_RULES = [
    BurnRateRule(severity="page", long_window="1h", short_window="5m", burn_rate=14.4),
    BurnRateRule(severity="page", long_window="6h", short_window="30m", burn_rate=6.0),
    BurnRateRule(severity="ticket", long_window="3d", short_window="6h", burn_rate=1.0),
]


class AlertsConfig(_Strict):
    """The background evaluator: how often, which rules, and where to send."""

    enabled: bool = True
    interval_seconds: float = Field(30.0, gt=0)
    rules: list[BurnRateRule] = Field(default_factory=lambda: list(_DEFAULT_RULES))
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    retries: int = Field(3, ge=0, le=10, description="Retries per webhook call, with exponential backoff.")
    min_events: int = Field(1, ge=1, description="Events the long window needs before a rule may fire.")
