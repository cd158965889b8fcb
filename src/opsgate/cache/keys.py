"""Cache keys: what makes two requests the same answer, exactly or semantically.

The exact key hashes the whole validated body (every parameter that can change the output,
vendor extensions included) with the endpoint, the tenant, the alias's deployments and the route
a release picked for this request (its deployment weights: the arm of a canary, the release
activated); only ``stream``, ``stream_options``, ``user`` and ``metadata`` are left out, since they
change how an answer is delivered or recorded, not what it says. A release's prompt and parameters
are already in the body by then (pipeline/release.py runs first).

The semantic bucket is the same hash with the text of the last user turn left out; that text is
what gets embedded. Earlier turns (the system prompt among them) stay in the bucket exactly: a long
shared system prompt would otherwise make every question look alike to the embedding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel

from opsgate.domain.config import ModelAlias
from opsgate.domain.requests import ChatCompletionRequest, CompletionRequest

# Bump when the stored format or the key recipe changes. 2: tenant-less traffic is keyed by null, not
# "default" (a tenant named "default" shared, and could poison, the operators' entries). 3: the
# release's route is in the key (an entry filled under version 2 may hold another arm's answer).
KEY_VERSION = 3
NOT_IN_KEY = frozenset({"stream", "stream_options", "user", "metadata"})
_DEPLOYMENT_IDENTITY = {"type", "base_url", "model", "model_path", "hf_repo", "hf_file"}


@dataclass(frozen=True, slots=True)
class CacheKeys:
    """Where one request's answer lives: its exact key and, when eligible, its semantic bucket and text."""

    exact: str
    bucket: str | None = None
    text: str | None = None

    @property
    def semantic(self) -> bool:
        """Whether this request takes part in the semantic cache."""
        return self.bucket is not None and self.text is not None


@dataclass(frozen=True, slots=True)
class SemanticRules:
    """Which requests the semantic cache may answer, and with which embedding alias."""

    embedding_model: str
    max_messages: int


def digest(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def alias_scope(alias: ModelAlias) -> str:
    """A fingerprint of what serves ``alias``, so pointing the alias at another model starts a fresh cache."""
    return digest([d.model_dump(mode="json", include=_DEPLOYMENT_IDENTITY) for d in alias.deployments])


def route_identity(weights: Mapping[str, float] | None) -> dict[str, float] | None:
    """The deployment weights a release routes with, as shares of their sum (None: the alias's own routing).

    Weights that route alike key alike (``{a: 1, b: 1}`` and ``{a: 50, b: 50}``); a deployment kept
    at weight 0 (a backup) stays in, since it may still answer.
    """
    if not weights:
        return None
    total = sum(weights.values())
    if total <= 0:
        return dict(weights)
    return {label: round(weight / total, 9) for label, weight in weights.items()}


def normalised(body: BaseModel) -> dict[str, Any]:
    """The request as it is keyed: every field that can change the output, unset and null fields dropped."""
    return body.model_dump(mode="json", exclude_none=True, exclude=set(NOT_IN_KEY))


def request_keys(
    endpoint: str,
    body: BaseModel,
    tenant: str | None,
    scope: str,
    semantic: SemanticRules | None = None,
    route: Mapping[str, float] | None = None,
) -> CacheKeys:
    """The exact key of this request and, if ``semantic`` applies to it, its bucket and text.

    ``tenant`` None (auth off, an operator key) is JSON null in the key, which no tenant's name equals.
    ``route`` is the release's deployment weights for this request (None: the alias's own routing), so
    two arms or releases that send the same body to different deployments never share an answer.
    """
    request = normalised(body)
    routed = route_identity(route)
    exact = digest(
        {"v": KEY_VERSION, "endpoint": endpoint, "tenant": tenant, "scope": scope, "route": routed, "request": request}
    )
    split = _semantic_split(body, request, semantic) if semantic is not None else None
    if split is None:
        return CacheKeys(exact)
    text, rest = split
    bucket = digest(
        {
            "v": KEY_VERSION,
            "endpoint": endpoint,
            "tenant": tenant,
            "scope": scope,
            "route": routed,
            "embedding": semantic.embedding_model if semantic else None,
            "request": rest,
        }
    )
    return CacheKeys(exact, bucket, text)


def _semantic_split(
    body: BaseModel, request: dict[str, Any], rules: SemanticRules
) -> tuple[str, dict[str, Any]] | None:
    """(text to embed, the rest of the request) when the semantic cache may answer it, else None.

    Only deterministic requests qualify (temperature explicitly 0): reusing a sampled answer for a
    different prompt would be a guess on top of a guess.
    """
    if getattr(body, "temperature", None) != 0:
        return None
    if isinstance(body, ChatCompletionRequest):
        if len(body.messages) > rules.max_messages:
            return None
        last = body.messages[-1]
        if last.role != "user" or not isinstance(last.content, str) or not last.content.strip():
            return None  # images or other parts are not compared by meaning
        messages = list(request["messages"])
        messages[-1] = {k: v for k, v in messages[-1].items() if k != "content"}
        return last.content, {**request, "messages": messages}
    if isinstance(body, CompletionRequest):
        text = body.prompt_text()
        if not text.strip():
            return None
        return text, {k: v for k, v in request.items() if k != "prompt"}
    return None  # embeddings requests are cached exactly only


def cache_directives(headers: Mapping[str, str]) -> frozenset[str]:
    """The request's ``Cache-Control`` directives, lower-cased (``no-cache``: skip lookup, ``no-store``: skip fill)."""
    value = headers.get("cache-control") or headers.get("Cache-Control")
    if not value:
        return frozenset()
    return frozenset(part.split("=", 1)[0].strip().lower() for part in value.split(",") if part.strip())
