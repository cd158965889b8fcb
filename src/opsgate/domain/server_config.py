"""Config for the HTTP server: where it listens, and how much and how long a client may send or stall."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from opsgate.domain.body_shape_config import BodyShapeConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    """Where and how the HTTP server listens."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="A request body must arrive within this time of its first read (else 408)."
    )
    send_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description=(
            "Each piece of a streamed answer must be taken by the client within this time, else the stream is"
            " abandoned: the upstream call is closed, the deployment's slot freed, the connection closed, and"
            " the request recorded as the client's (499 client_stalled), not the upstream's."
        ),
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=4096,
        le=1024 * 1024,
        description=(
            "A request's head (request line and header fields) past this many bytes is refused (431) and its"
            " connection closed, before the app or authentication runs."
        ),
    )
    header_timeout_seconds: float = Field(
        15.0,
        ge=0.5,
        le=300,
        description=(
            "A request's head must be complete within this time of its first byte (a connection's first"
            " request: of the connection's start), else 408 and the connection is closed."
        ),
    )
    body_shape: BodyShapeConfig = Field(
        default_factory=BodyShapeConfig,
        description="Caps on how much structure an inference body holds (messages, tools, metadata, values).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    forwarded_allow_ips: list[str] | None = Field(
        None,
        max_length=256,
        description=(
            "Peers (addresses or CIDR networks) whose X-Forwarded-For / X-Forwarded-Proto are believed: the"
            " client's address is then the one the proxy saw (the dashboard's failed-login throttle counts per"
            " address: behind an ingress that is not listed, every client shares the ingress's count). Unset:"
            " uvicorn's default, the FORWARDED_ALLOW_IPS environment variable or else 127.0.0.1. Empty: believe"
            " no one. '*' believes anyone, so any client can choose its address: only behind a proxy that is"
            " the only way in."
        ),
    )
    worker_healthcheck_seconds: int = Field(
        60,
        ge=1,
        le=600,
        description=(
            "With several workers: how long uvicorn's supervisor waits for a worker's health answer before it"
            " kills and restarts it. uvicorn's own default (5 s) kills workers still starting up on a busy CPU"
            " (loading the guard and embedding models), over and over (encode/uvicorn discussions 2396, 2450)."
        ),
    )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or ():
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an address, a CIDR network or '*'") from None
        return value
