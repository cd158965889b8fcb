"""Config for Prometheus metrics (``/metrics``) and OpenTelemetry traces (OTLP/HTTP)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricsConfig(_Strict):
    """``/metrics`` in the Prometheus text format, fed by each request's record."""

    enabled: bool = True
    max_tenants: int = Field(
        100, ge=1, description="Tenants with a label of their own (first seen); the rest are counted as 'other'."
    )
    multiprocess_dir: str | None = Field(
        None,
        description=(
            "With several workers: a directory where each worker leaves a snapshot of its counters every "
            "second, so any worker's /metrics answers for all of them; emptied when serve starts. "
            "Default: a fresh temporary directory per serve."
        ),
    )


class TracingConfig(_Strict):
    """OpenTelemetry traces with the GenAI semantic conventions, exported over OTLP/HTTP (protobuf)."""

    otlp_endpoint: str | None = Field(
        None,
        description="The collector's traces URL, e.g. http://127.0.0.1:4318/v1/traces. None: tracing off.",
    )
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Sent with every export (auth).")
    service_name: str = Field("opsgate", min_length=1)
    # 2% keeps metrics + tracing within 5% of full-load throughput (a recorded trace costs ~0.3 ms of
    # CPU, docs/benchmarks.md); a low-traffic gateway can afford 1.0.
    sample_ratio: float = Field(
        0.02, ge=0, le=1, description="Share of new traces recorded; an incoming traceparent's choice is kept."
    )
    capture_content: bool = Field(
        False, description="Put the messages and output on the request span (gen_ai.input/output.messages)."
    )
    stage_spans: bool = Field(True, description="A child span per pipeline stage, besides one per upstream attempt.")
    max_queue_size: int = Field(2048, ge=1, description="Spans waiting for export; beyond it new spans are dropped.")
    export_timeout_seconds: float = Field(10.0, gt=0)
    export_interval_ms: int = Field(2000, gt=0, description="How often queued spans are sent in one batch.")

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP)")
        return value


class TelemetryConfig(_Strict):
    """Metrics and traces."""

    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
