"""Configuration of authentication: API keys, the bootstrap admin key and the key cache."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class UiSessionConfig(BaseModel):
    """The dashboard's server-side login sessions (``auth/ui_sessions.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lifetime_seconds: float = Field(
        43200.0, ge=1, le=7 * 86400, description="Absolute lifetime of a dashboard session (12 h); then log in again."
    )
    idle_seconds: float = Field(1800.0, ge=1, le=86400, description="A session unused this long (30 min) ends.")
    max_per_key: int = Field(
        20, ge=1, le=1000, description="Live sessions one key may hold; a login past it ends that key's oldest."
    )
    login_max_failures: int = Field(
        10, ge=1, le=10_000, description="Failed logins from one address in a window before /ui/login is a 429."
    )
    login_window_seconds: float = Field(
        300.0, ge=1, le=86400, description="The window of login_max_failures (per replica, from the first failure)."
    )
    cookie_secure: Literal["auto", "always", "allow_http"] = Field(
        "auto",
        description=(
            "Secure flag of the session cookie. auto: set it unless the request is plain http to a loopback "
            "host (local use), and refuse a login over plain http elsewhere; always: set it on every response "
            "(behind a TLS-terminating proxy); allow_http: set it only on https requests (plain http on a "
            "trusted network: the cookie can be read on the wire)."
        ),
    )


class AdminRateConfig(BaseModel):
    """Per tenant, per replica: admin reads and writes a second (token buckets; 0 turns one off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reads_per_second: float = Field(100.0, ge=0, le=100_000, description="GETs to /admin and /ui a second.")
    read_burst: int = Field(500, ge=1, le=1_000_000, description="Reads allowed at once (a dashboard page makes ~10).")
    writes_per_second: float = Field(
        10.0, ge=0, le=100_000, description="POST/PUT/PATCH/DELETE to /admin and /ui a second (each may append audit)."
    )
    write_burst: int = Field(100, ge=1, le=1_000_000, description="Writes allowed at once.")


class AuthConfig(BaseModel):
    """Who may call the gateway. Off by default for local use; the gateway warns loudly when it is off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    admin_key: SecretStr | None = Field(
        None,
        description="Bootstrap operator key (usually ${OPSGATE_ADMIN_KEY}); sees every tenant; creates real keys.",
    )
    cache_ttl_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "How long a key lookup is reused; a revoked key stops working within this time (while the key store "
            "is unreachable, within this plus stale_if_error_seconds on replicas that did not make the revocation)."
        ),
    )
    negative_cache_seconds: float = Field(5.0, ge=0, description="How long an unknown key is remembered as unknown.")
    stale_if_error_seconds: float = Field(
        300.0,
        ge=0,
        le=86400,
        description=(
            "While the key store cannot be read, a key this process authenticated within this long before is "
            "still served as it was (a key it saw revoked is not); any other key gets 503 auth_unavailable. "
            "0 refuses every key not in the cache."
        ),
    )
    rotation_grace_seconds: float = Field(86400.0, ge=0, description="How long a rotated key keeps working.")
    max_keys_per_tenant: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description=(
            "Active (unrevoked, unexpired) API keys one tenant may hold; creating one more is a 409 "
            "key_limit_reached until a key is revoked. Operator keys (no tenant) are not counted."
        ),
    )
    public_metrics: bool = Field(False, description="Serve /metrics without a key (scraper on a private network).")
    allow_remote_without_auth: bool = Field(
        False, description="Permit auth off on a non-loopback address. Only behind another authenticating proxy."
    )
    ui_session: UiSessionConfig = Field(default_factory=UiSessionConfig)
    tenant_admin_rate: AdminRateConfig = Field(
        default_factory=lambda: AdminRateConfig(),
        description="How fast one tenant's keys together may call /admin and /ui (operator keys are not limited).",
    )
