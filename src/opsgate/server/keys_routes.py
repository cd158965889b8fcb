"""``/admin/keys``: create, list, show, rotate and revoke API keys (role ``admin``; tenant admins see their tenant).

A tenant admin creates and manages keys of its own tenant only; an operator key manages any, and
only an operator can create another operator key (``"tenant": null``). A key that a tenant's key
creates or rotates is never broader than that key; it revokes keys of a lesser role, or of its own
role when no broader (``auth/key_scope.py``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

from pydantic import BeforeValidator, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from opsgate.auth.authenticator import Authenticator
from opsgate.auth.key_fields import checked_models, checked_tenant
from opsgate.auth.key_limits import per_process_key_limits
from opsgate.auth.key_scope import bound_by_caller, caller_key, check_revocation, counted_against_caller
from opsgate.auth.key_store import KeySpec, KeyStore
from opsgate.domain.config import GatewayConfig
from opsgate.domain.errors import GatewayError, InvalidRequestError, PermissionDeniedError
from opsgate.domain.principal import ROLES, Principal
from opsgate.domain.reliability_config import LimitRule
from opsgate.server.access import actor_of, principal_of
from opsgate.server.http_io import json_response, read_json_value
from opsgate.server.query_params import NoQuery, QueryModel, parse_query, whole_number
from opsgate.store.query import decode_cursor, encode_cursor, parse_duration
from opsgate.store.record_log import RecordLog

_MAX_BODY_BYTES = 64 * 1024
_CREATE_FIELDS = {"tenant", "role", "name", "models", "limits", "expires_at", "expires_in"}
_LIMIT_FIELDS = {"requests_per_minute", "tokens_per_minute", "concurrent", "spend_per_day", "spend_per_month"}
MAX_KEYS_PAGE = 1000  # like /admin/requests; a key holds at most 64 aliases (16 KB), so a page is bounded
DEFAULT_KEYS_PAGE = 100


def _cursor(raw: object) -> tuple[float, str]:
    try:
        return decode_cursor(str(raw))
    except InvalidRequestError as error:
        raise ValueError(error.message) from None


class KeysQuery(QueryModel):
    """``GET /admin/keys``: one page, newest first; ``cursor`` is the ``next_cursor`` of the page before."""

    limit: Annotated[int, whole_number(1, MAX_KEYS_PAGE)] = DEFAULT_KEYS_PAGE
    cursor: Annotated[tuple[float, str], BeforeValidator(_cursor)] | None = None


class KeysHolder(Protocol):
    """What the keys API needs from the gateway."""

    config: GatewayConfig
    record_log: RecordLog | None
    authenticator: Authenticator


class KeysUnavailable(GatewayError):
    """No database to keep keys in."""

    status = 501
    error_type = "not_configured"


async def _json_object(request: Request) -> dict[str, Any]:
    # Bounded like every body; an empty one means "no options" (rotate and revoke take none).
    body = await read_json_value(request, _MAX_BODY_BYTES, empty={})
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.", code="invalid_body")
    return body


def _spec(body: dict[str, Any], request: Request, config: GatewayConfig) -> KeySpec:
    unknown = sorted(set(body) - _CREATE_FIELDS)
    if unknown:
        raise InvalidRequestError(f"Unknown field '{unknown[0]}'.", param=unknown[0])
    principal = principal_of(request)
    tenant = checked_tenant(body.get("tenant", principal.tenant))
    if not principal.is_operator and tenant != principal.tenant:
        raise PermissionDeniedError("A tenant's key can only create keys for its own tenant.", param="tenant")
    role = body.get("role", "service")
    if role not in ROLES:
        raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}.", param="role")
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        raise InvalidRequestError("name must be a string of at most 200 characters.", param="name")
    models = checked_models(body.get("models"), {alias.name for alias in config.models})
    limits = body.get("limits")
    if limits:
        problem = per_process_key_limits(config)
        if problem is not None:  # never silently N times the limit
            raise InvalidRequestError(problem, param="limits", code="limits_not_shared")
    if limits is not None:
        if not isinstance(limits, dict) or not set(limits) <= _LIMIT_FIELDS:
            raise InvalidRequestError(f"limits may hold {', '.join(sorted(_LIMIT_FIELDS))}.", param="limits")
        try:
            LimitRule(per="key", **limits)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidRequestError(f"Invalid limits.{where}: {first['msg']}.", param="limits") from None
    expires_at = body.get("expires_at")
    if body.get("expires_in") is not None:
        expires_in = body["expires_in"]
        if not isinstance(expires_in, str):
            raise InvalidRequestError("expires_in is a duration such as 30d or 12h.", param="expires_in")
        expires_at = time.time() + parse_duration(expires_in, "expires_in")
    if expires_at is not None and not _finite_number(expires_at, 0, _YEAR_9999):
        raise InvalidRequestError("expires_at is epoch seconds (before the year 9999).", param="expires_at")
    return KeySpec(
        tenant=tenant,
        role=role,
        name=name,
        models=models,
        limits=limits,
        expires_at=float(expires_at) if expires_at is not None else None,
    )


KeysHandler = Callable[[Request, KeyStore, KeysHolder], Awaitable[Response]]


def _keys(
    holder: KeysHolder, handler: KeysHandler, own_query: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if holder.record_log is None:
            raise KeysUnavailable(
                "API keys are kept in the record store; set record.store to manage keys.",
                code="record_store_not_configured",
            )
        if not own_query:
            parse_query(request, NoQuery)  # only the listing takes query parameters (it parses its own)
        record_log = holder.record_log
        store = await run_in_threadpool(lambda: KeyStore(record_log.store))
        return await handler(request, store, holder)

    return endpoint


async def create_key(request: Request, keys: KeyStore, holder: KeysHolder) -> Response:
    """``POST /admin/keys``: a new key; its secret is in this response only."""
    body = await _json_object(request)
    spec = _spec(body, request, holder.config)
    principal = principal_of(request)
    if not principal.is_operator:
        spec = await run_in_threadpool(_bounded, keys, principal, spec, body, holder.config)
    cap = holder.config.auth.max_keys_per_tenant
    created = await run_in_threadpool(keys.create, spec, actor_of(request), cap)
    return json_response(created.to_json(), 201)


def _bounded(
    keys: KeyStore, principal: Principal, spec: KeySpec, body: dict[str, Any], config: GatewayConfig
) -> KeySpec:
    """A tenant key's new key: what the body left out inherits the caller's restrictions; broader is 403."""
    given = set(body) | ({"expires_at"} if "expires_in" in body else set())
    expiry_param = "expires_in" if body.get("expires_in") is not None else "expires_at"
    caller = caller_key(keys, principal)
    bounded = counted_against_caller(bound_by_caller(spec, caller, given, expiry_param=expiry_param), caller)
    if bounded.limits and "limits" not in body:
        problem = per_process_key_limits(config)  # inherited limits would be counted per process too
        if problem is not None:
            raise InvalidRequestError(problem, param="limits", code="limits_not_shared")
    return bounded


def _check_rotation(keys: KeyStore, principal: Principal, key_id: str) -> None:
    """A tenant key may rotate only a key no broader than itself: the new key copies the old one's scopes."""
    target = keys.require(key_id, principal.tenant)
    if target.state() == "active":  # otherwise the store refuses the rotation (key_not_active)
        bound_by_caller(target.spec(), caller_key(keys, principal), subject=f"Key '{key_id}' (and so its rotation)")


async def list_keys(request: Request, keys: KeyStore, holder: KeysHolder) -> Response:
    """``GET /admin/keys?limit=&cursor=``: a page of the caller's tenant's keys (every key for an operator).

    Newest first, like ``/admin/requests``: ``next_cursor`` (null on the last page) fetches the next page.
    """
    query = parse_query(request, KeysQuery)
    tenant_scope = principal_of(request).tenant
    infos, after = await run_in_threadpool(keys.page, tenant_scope, query.limit, query.cursor)
    cursor = encode_cursor(*after) if after is not None else None
    return json_response({"object": "list", "data": [info.to_json() for info in infos], "next_cursor": cursor})


def _scope(request: Request) -> str | None:
    return principal_of(request).tenant


async def get_key(request: Request, keys: KeyStore, holder: KeysHolder) -> Response:
    """``GET /admin/keys/{id}``."""
    info = await run_in_threadpool(keys.require, request.path_params["id"], _scope(request))
    return json_response(info.to_json())


_YEAR_9999 = 253_402_300_800.0  # epoch seconds; past it datetimes (and the stores' times) overflow


def _finite_number(value: object, low: float, high: float) -> bool:
    """A JSON number (not a bool) in ``[low, high]``; ``1e400`` parses as infinity and is not one."""
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


async def rotate_key(request: Request, keys: KeyStore, holder: KeysHolder) -> Response:
    """``POST /admin/keys/{id}/rotate`` with optional ``{"grace_seconds": N}``: a new secret; the old one lapses."""
    authenticator = holder.authenticator
    body = await _json_object(request)
    grace = body.get("grace_seconds", authenticator.config.rotation_grace_seconds)
    if not _finite_number(grace, 0, 366 * 86400):
        raise InvalidRequestError("grace_seconds must be a number from 0 to a year.", param="grace_seconds")
    key_id = request.path_params["id"]
    principal = principal_of(request)
    if not principal.is_operator:
        await run_in_threadpool(_check_rotation, keys, principal, key_id)
    cap = holder.config.auth.max_keys_per_tenant
    created = await run_in_threadpool(keys.rotate, key_id, actor_of(request), float(grace), _scope(request), cap)
    authenticator.forget()
    return json_response(created.to_json(), 201)


async def revoke_key(request: Request, keys: KeyStore, holder: KeysHolder) -> Response:
    """``POST /admin/keys/{id}/revoke`` (or ``DELETE /admin/keys/{id}``): a tenant key, not a broader admin."""
    key_id = request.path_params["id"]
    principal = principal_of(request)
    if not principal.is_operator:
        await run_in_threadpool(check_revocation, keys, principal, key_id)
    info = await run_in_threadpool(keys.revoke, key_id, actor_of(request), _scope(request))
    holder.authenticator.forget()  # this replica at once; others within auth.cache_ttl_seconds
    return json_response(info.to_json())


def keys_routes(holder: KeysHolder) -> list[Route]:
    """The ``/admin/keys`` routes."""
    return [
        Route("/admin/keys", _keys(holder, create_key), methods=["POST"]),
        Route("/admin/keys", _keys(holder, list_keys, own_query=True), methods=["GET"]),
        Route("/admin/keys/{id}", _keys(holder, get_key), methods=["GET"]),
        Route("/admin/keys/{id}", _keys(holder, revoke_key), methods=["DELETE"]),
        Route("/admin/keys/{id}/rotate", _keys(holder, rotate_key), methods=["POST"]),
        Route("/admin/keys/{id}/revoke", _keys(holder, revoke_key), methods=["POST"]),
    ]
