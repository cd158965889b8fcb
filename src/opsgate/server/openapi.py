"""The OpenAPI document, generated from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from opsgate.domain.requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

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


def _inference_path(summary: str, model: type[BaseModel], streams: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "The completion" + (" (or an SSE stream when stream=true)" if streams else ""),
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }
    if streams:
        responses["200"]["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    for status, why in (
        ("400", "invalid request"),
        ("404", "unknown model"),
        ("413", "body too large"),
        ("415", "not JSON"),
        ("502", "upstream failed"),
        ("503", "overloaded; see Retry-After"),
        ("504", "upstream timed out"),
    ):
        responses[status] = {
            "description": why,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
            },
            "responses": responses,
        }
    }


def _get(summary: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        }
    }


@cache
def openapi_document(version: str) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    _, schemas = models_json_schema(
        [(m, "validation") for m in (ChatCompletionRequest, CompletionRequest, EmbeddingRequest)],
        ref_template="#/components/schemas/{model}",
    )
    components = dict(schemas.get("$defs", {}))
    components["Error"] = _ERROR_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": "opsgate", "version": version, "description": "OpenAI-compatible LLM gateway."},
        "paths": {
            "/v1/chat/completions": _inference_path("Create a chat completion", ChatCompletionRequest, True),
            "/v1/completions": _inference_path("Create a text completion", CompletionRequest, True),
            "/v1/embeddings": _inference_path("Create embeddings", EmbeddingRequest, False),
            "/v1/models": _get("List model aliases"),
            "/v1/models/{model}": _get("Describe one model alias"),
            "/healthz": _get("Liveness"),
            "/readyz": _get("Readiness: models loaded, deployments and queues"),
        },
        "components": {"schemas": components},
    }
