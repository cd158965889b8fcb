"""Config for routing, retries, fallbacks, circuit breakers, backpressure, the response cache and limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BreakerConfig(_Strict):
    """Per-deployment circuit breaker: closed → open → half-open probes → closed."""

    enabled: bool = True
    consecutive_failures: int = Field(5, ge=1, description="Open after this many failures in a row.")
    error_rate: float = Field(0.5, gt=0, le=1, description="…or when this share of the window failed…")
    window_seconds: float = Field(30.0, gt=0)
    min_requests: int = Field(20, ge=1, description="…once the window holds at least this many calls.")
    open_seconds: float = Field(15.0, gt=0, description="How long to stay open before probing.")
    half_open_probes: int = Field(1, ge=1, description="Successful probes needed to close again.")
    shared: str | None = Field(
        None,
        description="redis://… to share this breaker with every replica using the same Redis and key_prefix; "
        "None: per process. While Redis is unreachable each replica uses its own breaker (logged, in /readyz).",
    )
    key_prefix: str = Field("opsgate:breakers:", min_length=1, description="Redis key prefix of shared breakers.")
    sync_interval_seconds: float = Field(
        0.25, gt=0, le=10, description="Shared: how often a replica reports outcomes and reads the shared state."
    )


class HealthCheckConfig(_Strict):
    """Active health check: GET ``path`` on the deployment every ``interval_seconds``."""

    interval_seconds: float = Field(10.0, gt=0)
    timeout_seconds: float = Field(2.0, gt=0)
    path: str = "/models"


class DeploymentLimits(_Strict):
    """Backpressure per deployment: at most ``max_in_flight`` calls, a bounded wait line, then 503."""

    max_in_flight: int = Field(256, ge=1)
    max_queue: int = Field(512, ge=0)
    queue_timeout: float = Field(10.0, gt=0)


class RoutingConfig(_Strict):
    """How an alias picks among its deployments, retries, and falls back to other aliases."""

    strategy: Literal["weighted", "least_busy", "lowest_latency", "cost"] = "weighted"
    retries: int = Field(2, ge=0, le=10, description="Extra attempts after the first, on retryable failures.")
    backoff_initial: float = Field(0.05, ge=0)
    backoff_max: float = Field(2.0, ge=0)
    deadline_seconds: float = Field(120.0, gt=0, description="Total time for all attempts and fallbacks.")
    fallbacks: list[str] = Field(default_factory=list, description="Other aliases to try, in order.")
    exploration: float = Field(0.05, ge=0, le=1, description="lowest_latency: share of calls sent elsewhere.")


class CacheSemanticConfig(_Strict):
    """Semantic cache: reuse an answer to a near-identical prompt (temperature 0 only)."""

    enabled: bool = False
    threshold: float = Field(0.95, gt=0, le=1, description="Cosine similarity needed for a hit.")
    embedding_model: str = Field("all-minilm-l6-v2", description="An embedding alias of this gateway.")
    max_messages: int = Field(4, ge=1, description="Only conversations this short are matched.")


class CacheConfig(_Strict):
    """The response cache."""

    enabled: bool = False
    store: str = Field("memory", description="memory, or redis://host:port/db shared by replicas.")
    ttl_seconds: float = Field(300.0, gt=0)
    max_bytes: int = Field(64 * 1024 * 1024, gt=0, description="In-process store size bound (LRU).")
    max_entry_bytes: int = Field(
        4 * 1024 * 1024,
        gt=0,
        le=512 * 1024 * 1024,
        description="Largest answer kept, in either store; a bigger one is served, not cached (Redis had no bound).",
    )
    key_prefix: str = Field(
        "opsgate:cache:", min_length=1, description="Redis key prefix, so gateways can share one Redis."
    )
    semantic: CacheSemanticConfig = CacheSemanticConfig()


class LimitRule(_Strict):
    """Limits for requests matching ``key``/``user``/``model`` (``*`` or absent: any), counted per match value."""

    per: Literal["key", "user", "model", "key+model", "user+model", "global"] = "user"
    model: str | None = Field(None, description="Only for this alias.")
    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    concurrent: int | None = Field(None, gt=0)
    spend_per_day: float | None = Field(None, gt=0)
    spend_per_month: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _something(self) -> LimitRule:
        if not any(
            (
                self.requests_per_minute,
                self.tokens_per_minute,
                self.concurrent,
                self.spend_per_day,
                self.spend_per_month,
            )
        ):
            raise ValueError("a limit rule needs at least one limit")
        return self


class LimitsConfig(_Strict):
    """Rate limits and budgets, enforced reserve-then-settle."""

    enabled: bool = False
    redis: str | None = Field(None, description="redis://… to share counters across replicas; None: this process.")
    on_redis_error: Literal["open", "closed"] = Field(
        "closed", description="When Redis is unreachable: let requests through (open) or refuse them (closed)."
    )
    key_prefix: str = Field(
        "opsgate:limits:", min_length=1, description="Prefix of every Redis key, so gateways can share a Redis."
    )
    default_max_tokens: int = Field(1024, gt=0, description="Estimate for requests that set no max_tokens.")
    rules: list[LimitRule] = Field(default_factory=list)
