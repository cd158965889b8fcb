"""OpenAPI entries of ``/admin/drift`` (for openapi.py to merge, as it does ``release_openapi``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$"}
_EPOCH = {"type": "number", "minimum": 0, "maximum": 4e9}
_SPAN = {
    "type": "object",
    "properties": {"start": _EPOCH, "end": _EPOCH},
    "required": ["start", "end"],
    "additionalProperties": False,
}

BODIES: dict[str, Any] = {
    "DriftCheck": {
        "type": "object",
        "properties": {
            "alias": _NAME,
            "tenant": {**_NAME, "description": "A tenant key may only name its own tenant (the default)."},
            "current": {**_SPAN, "description": "Default: the configured current window, ending now."},
            "reference": {**_SPAN, "description": "Default: the pinned baseline, else the configured reference."},
        },
        "required": ["alias"],
        "additionalProperties": False,
    },
    "DriftBaseline": {
        "type": "object",
        "properties": {"alias": _NAME, "tenant": _NAME, "start": _EPOCH, "end": _EPOCH},
        "required": ["alias", "start", "end"],
        "additionalProperties": False,
    },
}


def operations(op: Callable[..., dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Path → method → operation, built with openapi.py's ``_op``."""
    scope = {"alias": _NAME, "tenant": _NAME}
    return {
        "/admin/drift/status": {"get": op("Newest drift check per alias (tenant keys: their own tenant's)", "drift")},
        "/admin/drift/checks": {
            "get": op(
                "Drift check history, newest first",
                "drift",
                query={
                    **scope,
                    "since": {"type": "string", "description": "1h, 7d, ISO 8601 or epoch seconds"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "drifted": {"type": "string", "enum": ["true", "false"]},
                    "scope": {
                        "type": "string",
                        "enum": ["global"],
                        "description": "global: only the all-tenant checks (operator keys; no tenant). "
                        "Unset: every check the key may see (a tenant key: its own tenant's).",
                    },
                },
            )
        },
        "/admin/drift/check": {
            "post": op(
                "Run one drift check now (stored, feeds drift SLOs); 404 model_not_found for an alias "
                "that is not a configured model; 503 while the store is unavailable or locked",
                "drift",
                body="DriftCheck",
            )
        },
        "/admin/drift/baseline": {
            "get": op("The pinned fixed reference window of a scope", "drift", query=scope),
            "put": op("Pin a fixed reference window (audited)", "drift", body="DriftBaseline"),
            "delete": op("Unpin: back to the configured reference (audited)", "drift", query=scope),
        },
    }
