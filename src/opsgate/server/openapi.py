"""The OpenAPI 3.1 document: every route the app registers, generated request schemas where pydantic has them.

The inference bodies come from the same pydantic models that validate requests; the admin bodies
are small hand-written JSON schemas next to the operation that takes them. Path parameters are
declared from the path template, and every operation says whether it needs the bearer key.
``tests/server/test_openapi.py`` checks the document against the app's registered routes and the
OpenAPI specification, so a route added without an entry here fails a test.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from opsgate.domain.requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from opsgate.drift import openapi as drift_openapi
from opsgate.drift import sentinel_openapi
from opsgate.server import release_openapi

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}
_ERROR = {
    "description": "An error in the OpenAI shape",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_PATH_PARAM = re.compile(r"{(\w+)}")
_STRING = {"type": "string"}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}
_SEARCH = {
    "q": _STRING,
    "since": _STRING,
    "until": _STRING,
    "stored_since": _STRING,
    "model": _STRING,
    "deployment": _STRING,
    "status": {"type": "integer"},
    "user": _STRING,
    "tenant": _STRING,
    "client_request_id": _STRING,
    "prompt": _STRING,
    "prompt_version": {"type": "integer", "minimum": 1},
    "release": _STRING,
    "experiment": _STRING,
    "arm": _STRING,
    "tag": _STRING,
    "min_latency_ms": {"type": "number"},
    "max_latency_ms": {"type": "number"},
    "min_cost": {"type": "number"},
    "max_cost": {"type": "number"},
    "limit": _LIMIT,
    "cursor": _STRING,
}
_KEY_LIMITS = {
    "type": "object",
    "properties": {
        name: {"type": "number", "minimum": 0}
        for name in ("requests_per_minute", "tokens_per_minute", "concurrent", "spend_per_day", "spend_per_month")
    },
    "additionalProperties": False,
}
_BODIES: dict[str, dict[str, Any]] = {
    "Erasure": {
        "type": "object",
        "properties": {"user": {"type": "string", "minLength": 1}},
        "required": ["user"],
        "additionalProperties": False,
    },
    "KeyCreate": {
        "type": "object",
        "properties": {
            "tenant": {"type": ["string", "null"], "maxLength": 256},
            "role": {"type": "string", "enum": ["admin", "developer", "viewer", "service"]},
            "name": {"type": "string", "maxLength": 200},
            "models": {
                "type": ["array", "null"],
                "items": {"type": "string", "minLength": 1, "maxLength": 256},
                "maxItems": 64,
                "uniqueItems": True,
                "description": "Configured aliases this key may call (exact names).",
            },
            "limits": {"anyOf": [_KEY_LIMITS, {"type": "null"}]},
            "expires_at": {"type": ["number", "null"]},
            "expires_in": {"type": ["string", "null"], "examples": ["30d"]},
        },
        "additionalProperties": False,
    },
    "KeyRotate": {
        "type": "object",
        "properties": {"grace_seconds": {"type": "number", "minimum": 0}},
        "additionalProperties": False,
    },
    "Feedback": {
        "type": "object",
        "properties": {
            "request_id": {"type": "string", "minLength": 1, "maxLength": 200},
            "score": {
                "anyOf": [{"type": "string", "enum": ["up", "down"]}, {"type": "integer", "minimum": 1, "maximum": 5}]
            },
            "comment": {"type": "string"},
            "user": {"type": "string", "maxLength": 256},
        },
        "required": ["request_id", "score"],
        "additionalProperties": False,
    },
    "Measurement": {
        "type": "object",
        "properties": {
            "slo": {"type": "string"},
            "value": {"type": "number"},
            "ts": {"type": "number"},
            "tenant": {"type": "string"},
        },
        "required": ["slo", "value"],
        "additionalProperties": False,
    },
    "EvalDataset": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
            "items": {"type": "array", "minItems": 1, "items": {"type": "object"}},
            "tenant": {"type": ["string", "null"]},
        },
        "required": ["name", "items"],
        "additionalProperties": False,
    },
    "Login": {
        "type": "object",
        "properties": {"key": {"type": "string"}, "next": {"type": "string"}},
        "required": ["key"],
    },
}


def _op(
    summary: str,
    tag: str,
    *,
    query: dict[str, Any] | None = None,
    body: str | None = None,
    access: str = "key",
    ok: str = "200",
    html: bool = False,
) -> dict[str, Any]:
    """One operation. ``access``: ``key`` (bearer needed), ``public``, or ``optional`` (a key adds detail)."""
    media = "text/html" if html else "application/json"
    responses: dict[str, Any] = {"default": _ERROR}
    if ok == "303":
        responses["303"] = {"description": "Redirect (to the dashboard or the login page)"}
    else:
        responses[ok] = {"description": "OK", "content": {media: {"schema": {"type": "string"} if html else {}}}}
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if query:
        operation["parameters"] = [
            {"name": name, "in": "query", "required": False, "schema": schema} for name, schema in query.items()
        ]
    if body is not None:
        form = body == "Login"
        content_type = "application/x-www-form-urlencoded" if form else "application/json"
        operation["requestBody"] = {
            "required": body not in ("KeyCreate", "KeyRotate"),
            "content": {content_type: {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if access == "public":
        operation["security"] = []
    elif access == "optional":
        operation["security"] = [{}, {"bearerAuth": []}]
    return operation


def _inference(summary: str, model: type[BaseModel], streams: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "summary": summary,
        "tags": ["inference"],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        },
        "responses": {
            "200": {
                "description": "The result" + (" (an SSE stream when stream=true)" if streams else ""),
                "content": content,
            },
            "default": _ERROR,
        },
    }


def _operations() -> dict[str, dict[str, dict[str, Any]]]:
    """Path → method → operation, for every route ``create_app`` registers (the /ui static files aside)."""
    since = {"since": _STRING}
    return {
        "/v1/chat/completions": {"post": _inference("Create a chat completion", ChatCompletionRequest, True)},
        "/v1/completions": {"post": _inference("Create a text completion", CompletionRequest, True)},
        "/v1/embeddings": {"post": _inference("Create embeddings", EmbeddingRequest, False)},
        "/v1/models": {"get": _op("List the model aliases this key may use", "inference")},
        "/v1/models/{model}": {"get": _op("Describe one model alias", "inference")},
        "/v1/feedback": {"post": _op("Thumbs or 1-5 stars on a request", "feedback", body="Feedback", ok="201")},
        "/healthz": {"get": _op("Liveness", "operations", access="public")},
        "/readyz": {
            "get": _op(
                "Readiness: state per component; details with a key that may read", "operations", access="optional"
            )
        },
        "/metrics": {"get": _op("Prometheus metrics (operator key)", "operations")},
        "/openapi.json": {"get": _op("This document", "operations", access="public")},
        "/admin/deployments": {"get": _op("Routing state of every deployment", "operations")},
        "/admin/requests": {"get": _op("Search the request log", "requests", query=_SEARCH)},
        "/admin/requests/export": {
            "get": _op(
                "Export matching records (JSONL, CSV, Parquet)",
                "requests",
                query={**_SEARCH, "format": {"type": "string", "enum": ["jsonl", "csv", "parquet"]}},
            )
        },
        "/admin/requests/{id}": {"get": _op("One record with its payloads", "requests")},
        "/admin/erasure": {"post": _op("Erase a user's records (operator)", "requests", body="Erasure")},
        "/admin/usage": {
            "get": _op(
                "Requests, tokens and cost",
                "requests",
                query={
                    "by": {
                        "type": "string",
                        "enum": ["model", "user", "day", "tenant", "prompt_version", "release", "experiment_arm"],
                    },
                    "since": _STRING,
                    "until": _STRING,
                    "tenant": _STRING,
                },
            )
        },
        "/admin/audit": {"get": _op("The audit log (operator admin)", "audit", query={"limit": _LIMIT})},
        "/admin/audit/verify": {
            "get": _op("Verify the audit hash chain", "audit", query={"anchor": {"type": "string"}})
        },
        "/admin/evals/datasets": {
            "get": _op("Evaluation dataset versions", "evals", query={"limit": _LIMIT}),
            "post": _op(
                "Add a dataset version (small; import files with the CLI)", "evals", body="EvalDataset", ok="201"
            ),
        },
        "/admin/evals/datasets/{dataset}": {
            "get": _op("A dataset version and its items", "evals", query={"limit": _LIMIT})
        },
        "/admin/evals/datasets/{dataset}/export": {"get": _op("A dataset version as JSONL", "evals")},
        "/admin/evals/runs": {"get": _op("Evaluation runs", "evals", query={"limit": _LIMIT})},
        "/admin/evals/runs/{run}": {"get": _op("A run with its summary", "evals")},
        "/admin/evals/runs/{run}/items": {
            "get": _op(
                "A run's items: input, output, scores, judge reasons",
                "evals",
                query={"limit": _LIMIT, "after": _STRING},
            )
        },
        "/admin/evals/compare": {
            "get": _op(
                "Paired comparison of two runs",
                "evals",
                query={"baseline": _STRING, "candidate": _STRING, "scorer": _STRING},
            )
        },
        "/admin/evals/gate": {
            "get": _op(
                "Regression gate verdict",
                "evals",
                query={"baseline": _STRING, "candidate": _STRING, "max_degradation": _STRING, "scorer": _STRING},
            )
        },
        "/admin/evals/report": {
            "get": _op(
                "Model choice report (quality, cost, latency, Pareto)",
                "evals",
                query={
                    "run": _STRING,
                    "quality": _STRING,
                    "format": {"type": "string", "enum": ["json", "md", "html"]},
                },
            )
        },
        "/admin/keys": {
            "get": _op(
                "List API keys (newest first, a page at a time)", "keys", query={"limit": _LIMIT, "cursor": _STRING}
            ),
            "post": _op("Create an API key (the secret is shown once)", "keys", body="KeyCreate", ok="201"),
        },
        "/admin/keys/{id}": {
            "get": _op("One API key", "keys"),
            "delete": _op("Revoke an API key", "keys"),
        },
        "/admin/keys/{id}/rotate": {"post": _op("Rotate an API key", "keys", body="KeyRotate", ok="201")},
        "/admin/keys/{id}/revoke": {"post": _op("Revoke an API key", "keys")},
        "/admin/cache": {"delete": _op("Purge the response cache (operator)", "operations")},
        "/admin/config/reload": {
            "post": _op("Reload the config file: validated, swapped atomically, audited (operator)", "operations")
        },
        "/admin/slo": {"get": _op("Every SLO with budget and burn rates", "slo")},
        "/admin/slo/measurements": {"post": _op("Add a value of a measured SLI", "slo", body="Measurement", ok="201")},
        "/admin/slo/{name}/history": {"get": _op("An SLO over time", "slo", query=since)},
        "/admin/alerts": {
            "get": _op(
                "Alert episodes",
                "slo",
                query={"state": {"type": "string", "enum": ["firing", "resolved"]}, "limit": _LIMIT},
            )
        },
        "/admin/errors": {
            "get": _op(
                "Failed requests grouped by signature", "slo", query={**since, "limit": _LIMIT, "tenant": _STRING}
            )
        },
        "/admin/feedback/summary": {
            "get": _op(
                "CSAT and NPS-style KPIs",
                "feedback",
                query={"by": {"type": "string", "enum": ["model", "tenant", "day"]}, **since, "tenant": _STRING},
            )
        },
        "/admin/stats/timeseries": {
            "get": _op("Traffic, latency, cost over time", "slo", query={**since, "step": _STRING, "tenant": _STRING})
        },
        **{
            path: {"get": _op(summary, "dashboard", html=True)}
            for path, summary in (
                ("/ui", "Dashboard overview"),
                ("/ui/", "Dashboard overview"),
                ("/ui/slo", "SLO board"),
                ("/ui/requests", "Request log page"),
                ("/ui/requests/{id}", "One request"),
                ("/ui/errors", "Error groups"),
                ("/ui/feedback", "Feedback KPIs"),
                ("/ui/guard", "Guard events"),
                ("/ui/evals", "Evaluation runs"),
                ("/ui/evals/compare", "Compare two evaluation runs"),
                ("/ui/evals/runs/{run}", "An evaluation run's items"),
                ("/ui/drift", "Drift over time per alias"),
                ("/ui/drift/{alias}", "One alias's drift checks; ?at= one check's full report"),
            )
        },
        "/ui/login": {
            "get": _op("The login form", "dashboard", access="public", html=True),
            "post": _op("Log in: sets the session cookie", "dashboard", access="public", body="Login", ok="303"),
        },
        "/ui/logout": {"post": _op("Log out", "dashboard", access="public", ok="303")},
        **release_openapi.operations(_op),
        **sentinel_openapi.operations(_op),
        **drift_openapi.operations(_op),
    }


def _with_path_parameters(path: str, methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    names = _PATH_PARAM.findall(path)
    if not names:
        return methods
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names]
    return {"parameters": parameters, **methods}


@cache
def openapi_document(version: str) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    _, schemas = models_json_schema(
        [(m, "validation") for m in (ChatCompletionRequest, CompletionRequest, EmbeddingRequest)],
        ref_template="#/components/schemas/{model}",
    )
    components = {
        **schemas.get("$defs", {}),
        **_BODIES,
        **release_openapi.BODIES,
        **sentinel_openapi.BODIES,
        **drift_openapi.BODIES,
        "Error": _ERROR_SCHEMA,
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "opsgate", "version": version, "description": "OpenAI-compatible LLM gateway."},
        "paths": {path: _with_path_parameters(path, methods) for path, methods in _operations().items()},
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An opsgate API key (og_…) or the bootstrap admin key.",
                }
            },
        },
        "security": [{"bearerAuth": []}],
    }
