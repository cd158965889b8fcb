"""Bounds on what a client may write into a key: its ``models`` list, its tenant name, and the audit copy.

A key's fields land in ``api_keys`` and, through every create, rotate and revoke, in the append-only
audit chain, which is never pruned. So each client-chosen field is bounded here: ``models`` holds at
most ``MAX_KEY_MODELS`` distinct names of configured aliases (the request stage matches a key's
models exactly against the alias asked for: ``Principal.allows_model``; there are no patterns), and
the audit entry carries a count and a SHA-256 digest in place of a list longer than a few entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

import orjson

from opsgate.domain.errors import InvalidRequestError

MAX_KEY_MODELS = 64  # distinct aliases one key may name; a deployment has far fewer
MAX_MODEL_NAME_CHARS = 256
MAX_TENANT_CHARS = 256
AUDIT_MODELS_SHOWN = 8  # a longer list is audited as {"count", "sha256"}


def checked_models(raw: object, aliases: Collection[str]) -> tuple[str, ...] | None:
    """``raw`` (a key's ``models``) as a tuple, or None for every model; 400 naming ``models`` otherwise."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(m, str) and m for m in raw):
        raise InvalidRequestError("models must be a list of model names, or null for every model.", param="models")
    if len(raw) > MAX_KEY_MODELS:
        raise InvalidRequestError(
            f"models may name at most {MAX_KEY_MODELS} aliases ({len(raw)} given).", param="models"
        )
    too_long = next((m for m in raw if len(m) > MAX_MODEL_NAME_CHARS), None)
    if too_long is not None:
        raise InvalidRequestError(
            f"models entries are at most {MAX_MODEL_NAME_CHARS} characters ('{too_long[:40]}...' is longer).",
            param="models",
        )
    seen: set[str] = set()
    for model in raw:
        if model in seen:
            raise InvalidRequestError(f"models names '{model}' twice.", param="models")
        seen.add(model)
    unknown = next((m for m in raw if m not in aliases), None)
    if unknown is not None:
        known = ", ".join(sorted(aliases)[:20]) or "none"
        raise InvalidRequestError(
            f"models: '{unknown}' is not a configured model alias (configured: {known}).",
            param="models",
            code="model_not_found",
        )
    return tuple(raw)


def checked_tenant(raw: object) -> str | None:
    """``raw`` (a key's ``tenant``): null (an operator key) or a name of at most ``MAX_TENANT_CHARS``."""
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > MAX_TENANT_CHARS:
        raise InvalidRequestError(
            f"tenant must be a string of at most {MAX_TENANT_CHARS} characters, or null.", param="tenant"
        )
    return raw


def models_digest(models: Collection[str]) -> str:
    """SHA-256 of the list as compact JSON, in order: what an auditor recomputes from ``GET /admin/keys/{id}``."""
    return hashlib.sha256(orjson.dumps(list(models))).hexdigest()


def audited(key_json: dict[str, Any]) -> dict[str, Any]:
    """A key's listing as the audit chain keeps it: a long ``models`` list becomes its count and digest."""
    models = key_json.get("models")
    if models is None or len(models) <= AUDIT_MODELS_SHOWN:
        return key_json
    return {**key_json, "models": {"count": len(models), "sha256": models_digest(models)}}
