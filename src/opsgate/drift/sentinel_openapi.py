"""OpenAPI entries of ``/admin/sentinel`` (merged by ``server/openapi.py``, as ``release_openapi`` is)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_NAME = {"type": "string", "minLength": 1, "maxLength": 200}

BODIES: dict[str, Any] = {
    "SentinelRun": {
        "type": "object",
        "properties": {"alias": _NAME, "deployment": {**_NAME, "description": "A label, alias#index."}},
        "additionalProperties": False,
    },
    "SentinelBaseline": {
        "type": "object",
        "properties": {"alias": _NAME, "deployment": {**_NAME, "description": "A label, alias#index."}},
        "required": ["alias"],
        "additionalProperties": False,
    },
}


def operations(op: Callable[..., dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Path → method → operation, built with openapi.py's ``_op``. Every route is operator-only."""
    runs_query = {
        "limit": {"type": "integer", "minimum": 1, "maximum": 500},
        "alias": _NAME,
        "deployment": _NAME,
        "changed": {"type": "boolean", "description": "Only runs that found a behaviour change."},
    }
    return {
        "/admin/sentinel/status": {"get": op("The sentinel: schedule, lease, counts, latest changes", "sentinel")},
        "/admin/sentinel/runs": {"get": op("Sentinel runs, newest first", "sentinel", query=runs_query)},
        "/admin/sentinel/runs/{run}": {"get": op("A run with each golden prompt's verdict and diff", "sentinel")},
        "/admin/sentinel/run": {
            "post": op("Run the golden prompts now (answers when done)", "sentinel", body="SentinelRun")
        },
        "/admin/sentinel/baseline": {
            "post": op("Store new baselines after an intended change", "sentinel", body="SentinelBaseline")
        },
    }
