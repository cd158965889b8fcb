"""OpenAPI entries of ``/admin/prompts``, ``/admin/releases`` and ``/admin/experiments`` (merged by openapi.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_STRING = {"type": "string"}
_OBJECT = {"type": "object"}

BODIES: dict[str, Any] = {
    "PromptCreate": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"},
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": 32,
                "items": {
                    "type": "object",
                    "properties": {
                        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
                        "content": {"type": "string", "description": "A Jinja2 template (sandboxed)."},
                    },
                    "required": ["role", "content"],
                },
            },
            "variables": {"type": "array", "items": _STRING, "maxItems": 64},
            "parameters": _OBJECT,
            "notes": _STRING,
            "label": _STRING,
        },
        "required": ["name", "messages"],
        "additionalProperties": False,
    },
    "PromptLabel": {
        "type": "object",
        "properties": {"label": _STRING, "version": {"type": "integer", "minimum": 1}},
        "required": ["label", "version"],
        "additionalProperties": False,
    },
    "ReleaseCreate": {
        "type": "object",
        "properties": {
            "alias": _STRING,
            "deployments": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
            "prompt": {"type": "string", "description": "name@label or name@version (pinned at creation)"},
            "parameters": _OBJECT,
            "notes": _STRING,
            "activate": {"type": "boolean"},
        },
        "required": ["alias"],
        "additionalProperties": False,
    },
    "ReleaseChange": {
        "type": "object",
        "properties": {
            "release": _STRING,
            "weight": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
            "to": _STRING,
            "reason": _STRING,
            "revision": {"type": "integer", "description": "The revision you saw; another one is a 409."},
        },
    },
    "ExperimentStart": {
        "type": "object",
        "properties": {
            "alias": _STRING,
            "arms": {"type": "array", "minItems": 2, "maxItems": 8, "items": _OBJECT},
            "settings": _OBJECT,
            "revision": {"type": "integer"},
        },
        "required": ["alias", "arms"],
    },
}


def operations(op: Callable[..., dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Path → method → operation, built with openapi.py's ``_op``."""
    tenant = {"tenant": _STRING}
    return {
        "/admin/prompts": {
            "get": op("Prompts of the caller's tenant (operator: shared, or ?tenant=)", "releases", query=tenant),
            "post": op("Create a prompt version (same content: the existing one)", "releases", body="PromptCreate"),
        },
        "/admin/prompts/{name}": {"get": op("A prompt's versions and labels", "releases", query=tenant)},
        "/admin/prompts/{name}/diff": {
            "get": op("Diff two versions", "releases", query={"from": _STRING, "to": _STRING, **tenant})
        },
        "/admin/prompts/{name}/labels": {
            "post": op("Point a label at a version (audited)", "releases", body="PromptLabel", query=tenant)
        },
        "/admin/releases": {
            "get": op("Every alias's release state (operator)", "releases"),
            "post": op("Create a release of an alias (operator)", "releases", body="ReleaseCreate", ok="201"),
        },
        "/admin/releases/{alias}": {"get": op("An alias's releases, state and history (operator)", "releases")},
        "/admin/releases/{alias}/canary": {
            "post": op("Start a canary: weight % of users, sticky (operator)", "releases", body="ReleaseChange")
        },
        "/admin/releases/{alias}/activate": {
            "post": op("Make a release active at once (operator)", "releases", body="ReleaseChange")
        },
        "/admin/releases/{alias}/promote": {
            "post": op("Promote the running canary (operator)", "releases", body="ReleaseChange")
        },
        "/admin/releases/{alias}/rollback": {
            "post": op(
                "End the canary, or go back to the previous or a named release (operator)",
                "releases",
                body="ReleaseChange",
            )
        },
        "/admin/experiments": {
            "get": op("Experiments (operator)", "releases"),
            "post": op(
                "Start an A/B(/n) or shadow experiment (operator)", "releases", body="ExperimentStart", ok="201"
            ),
        },
        "/admin/experiments/{experiment}": {
            "get": op("Per-arm metrics, tests, intervals, sequential verdicts and a plan (operator)", "releases")
        },
        "/admin/experiments/{experiment}/stop": {"post": op("Stop an experiment (operator)", "releases")},
        "/ui/releases": {"get": op("Releases, experiments and prompts", "dashboard", html=True)},
        "/ui/prompts/{name}": {"get": op("A prompt's versions and a diff", "dashboard", html=True)},
        "/ui/experiments/{experiment}": {
            "get": op("An experiment: arms, intervals, verdict, log", "dashboard", html=True)
        },
    }
