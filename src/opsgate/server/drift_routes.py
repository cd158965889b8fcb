"""``/admin/drift``: drift check results, their history, on-demand checks and fixed baselines.

Tenant scoping: a check covers one alias over every tenant (global) or one tenant (per-tenant
checks, ``drift.per_tenant``). A tenant-bound key sees and runs only its own tenant's per-tenant
checks; global checks mix every tenant's traffic, so they are for operator keys only. Reads need
``read``, POST/PUT/DELETE ``write`` (``auth/permissions.py`` decides by method). Every client
mistake is a 4xx in the OpenAI error shape; an alias that is not a configured model is a 404
(``model_not_found``); a store that is down or locked past its busy timeout is a 503.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from opsgate.domain.errors import GatewayError, InvalidRequestError, NotFoundError, PermissionDeniedError
from opsgate.drift.checker import DriftChecker, WindowError, validate_baseline
from opsgate.drift.engine import Span
from opsgate.drift.history import GLOBAL, DriftHistory
from opsgate.drift.manual_checks import ManualChecks
from opsgate.drift.windows import NO_TENANT, WindowStore
from opsgate.server.access import actor_of, principal_of, scoped_tenant
from opsgate.server.admin import require_record_log
from opsgate.server.http_io import ADMIN_MAX_BODY_BYTES, json_response, read_json_value
from opsgate.server.query_params import NoQuery, QueryModel, Time, parse_query, whole_number
from opsgate.store.failures import store_down
from opsgate.store.record_log import StoreUnavailable

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$")
MAX_HISTORY = 1000
T = TypeVar("T")


def _name(raw: object) -> str:
    if not isinstance(raw, str) or not _NAME.match(raw):
        raise ValueError("must be 1-200 characters: letters, digits and . _ : / @ -")
    return raw


Name = Annotated[str, BeforeValidator(_name)]
Epoch = Annotated[float, Field(ge=0, le=4e9, allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SpanBody(_Body):
    """A window in epoch seconds: start inclusive, end exclusive."""

    start: Epoch
    end: Epoch

    @model_validator(mode="after")
    def _ordered(self) -> SpanBody:
        if not self.end > self.start:
            raise ValueError("end must be after start")
        return self


class CheckBody(_Body):
    """``POST /admin/drift/check``: which scope, and optionally which windows."""

    alias: Name
    tenant: Name | None = None
    current: SpanBody | None = None
    reference: SpanBody | None = None


class BaselineBody(_Body):
    """``PUT /admin/drift/baseline``: pin the fixed reference window of a scope."""

    alias: Name
    tenant: Name | None = None
    start: Epoch
    end: Epoch


class ChecksQuery(QueryModel):
    """A page of stored results."""

    alias: Annotated[str, BeforeValidator(_name)] | None = None
    tenant: Annotated[str, BeforeValidator(_name)] | None = None
    since: Time | None = None
    limit: Annotated[int, whole_number(1, MAX_HISTORY)] = 100
    drifted: Annotated[str, BeforeValidator(lambda v: _bool_text(v))] | None = None
    # global: only the all-tenant checks (operator keys); unset: every check the key may see.
    scope: Literal["global"] | None = None


class ScopeQuery(QueryModel):
    """One scope (the baseline routes)."""

    alias: Annotated[str, BeforeValidator(_name)]
    tenant: Annotated[str, BeforeValidator(_name)] | None = None


def _bool_text(raw: object) -> str:
    if raw not in ("true", "false"):
        raise ValueError("must be true or false")
    return str(raw)


async def _json_body(request: Request, model: type[_Body]) -> Any:
    body = await read_json_value(request, ADMIN_MAX_BODY_BYTES)
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.", code="invalid_body")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidRequestError(f"{param or 'body'}: {message}.", param=param, code="invalid_body") from None


def _tenant_for(request: Request, asked: str | None) -> str | None:
    """The scope a caller may use: operators any (None: global); a tenant key only its own tenant."""
    principal = principal_of(request)
    if principal.is_operator:
        return asked
    return scoped_tenant(request, asked)


def _clean(result: dict[str, Any]) -> dict[str, Any]:
    """A stored result for the API: finite numbers only (JSON has no NaN)."""

    def fix(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    cleaned: dict[str, Any] = fix(result)
    return cleaned


async def store_work(store: Callable[[], Any], call: Callable[[], T]) -> T:
    """Run store work in a thread; a store that is down or locked (past its busy timeout), by the
    store's own declaration of its transient errors, is a 503 in the OpenAI error shape, not a 500."""
    try:
        return await run_in_threadpool(call)
    except GatewayError:
        raise
    except Exception as error:
        try:
            down = store_down(store(), error)
        except GatewayError:
            down = True
        if not down:
            raise
        raise StoreUnavailable(
            f"The record store is unavailable or busy; try again: {type(error).__name__}: {str(error)[:200]}",
            code="store_unavailable",
        ) from None


def drift_routes(gateway: Any) -> list[Route]:
    """The ``/admin/drift`` routes over ``gateway``'s record store and drift monitor."""

    manual = ManualChecks(gateway.config.drift.manual_check_interval)
    baseline_changes = ManualChecks(
        gateway.config.drift.manual_check_interval,
        action="drift baseline change",
        code="drift_baseline",
        exclusive=False,
    )

    def monitor() -> Any:
        return next((s for s in getattr(gateway, "services", []) if getattr(s, "name", "") == "drift"), None)

    def store() -> Any:
        return require_record_log(gateway, "so there are no drift tables").store

    async def blocking(call: Callable[[], T]) -> T:
        return await store_work(store, call)

    def require_alias(alias: str) -> None:
        """404 for an alias that is not a configured model (as /v1 answers): no checks of made-up names."""
        if alias not in {model.name for model in gateway.config.models}:
            raise NotFoundError(f"The model '{alias}' does not exist.", param="alias", code="model_not_found")

    async def status(request: Request) -> Response:
        """``GET /admin/drift/status``: the newest result per alias in the caller's scope."""
        parse_query(request, NoQuery)
        principal = principal_of(request)
        scope = None if principal.is_operator else principal.tenant
        rows = await blocking(lambda: DriftHistory(store()).latest(scope))
        body: dict[str, Any] = {"object": "list", "data": [_clean(r) for r in rows]}
        service = monitor()
        body["enabled"] = service is not None
        if principal.is_operator and service is not None:
            body["monitor"] = service.status()
        return json_response(body)

    async def checks(request: Request) -> Response:
        """``GET /admin/drift/checks``: stored results, newest first (the drift spec's shape)."""
        query = parse_query(request, ChecksQuery)
        principal = principal_of(request)
        if query.scope == "global":
            if not principal.is_operator:
                raise PermissionDeniedError(
                    "All-tenant drift checks mix every tenant's traffic: operator keys only.",
                    param="scope",
                    code="tenant_denied",
                )
            if query.tenant is not None:
                raise InvalidRequestError("scope=global takes no tenant.", param="tenant", code="invalid_query")
            tenant: str | None = GLOBAL
        else:
            tenant = query.tenant if principal.is_operator else scoped_tenant(request, query.tenant)
        drifted = None if query.drifted is None else query.drifted == "true"
        rows = await blocking(
            lambda: DriftHistory(store()).list(query.alias, tenant, query.since, query.limit, drifted)
        )
        return json_response({"object": "list", "data": [_clean(r) for r in rows]})

    async def check(request: Request) -> Response:
        """``POST /admin/drift/check``: run one check now, store it, feed the drift SLOs."""
        parse_query(request, NoQuery)
        body: CheckBody = await _json_body(request, CheckBody)
        tenant = _tenant_for(request, body.tenant)
        require_alias(body.alias)
        current = Span(body.current.start, body.current.end) if body.current is not None else None
        reference = Span(body.reference.start, body.reference.end) if body.reference is not None else None
        service = monitor()
        manual.interval = gateway.config.drift.manual_check_interval  # a reload may change it
        try:
            with manual.admit(tenant, body.alias, operator=principal_of(request).is_operator):
                if service is not None:
                    result = await blocking(
                        lambda: service.check_now(body.alias, tenant, current=current, reference=reference)
                    )
                else:
                    checker = DriftChecker(gateway.config, store())
                    result = await blocking(
                        lambda: checker.check(body.alias, tenant, current=current, reference=reference)
                    )
        except WindowError as error:
            raise InvalidRequestError(f"{error}.", param="current", code="invalid_window") from None
        return json_response(_clean(result))

    async def put_baseline(request: Request) -> Response:
        """``PUT /admin/drift/baseline``: compare the scope with this fixed window from now on. Checked with
        the rules a check applies to it (a baseline no check can use would fail every round); a PUT that
        changes nothing answers the baseline without writing; a tenant admin changes one alias's baseline
        at most once per ``manual_check_interval`` (each change is an append-only audit row)."""
        parse_query(request, NoQuery)
        body: BaselineBody = await _json_body(request, BaselineBody)
        tenant = _tenant_for(request, body.tenant) or NO_TENANT
        require_alias(body.alias)
        try:
            validate_baseline(gateway.config.drift, body.start, body.end, time.time())
        except WindowError as error:
            raise InvalidRequestError(f"{error}.", param="end", code="invalid_window") from None
        actor = actor_of(request)
        answer = {"alias": body.alias, "tenant": tenant or None, "start": body.start, "end": body.end}
        if await blocking(lambda: WindowStore(store()).baseline(body.alias, tenant)) == (body.start, body.end):
            return json_response(answer)

        def save() -> None:
            target = store()
            if WindowStore(target).set_baseline(body.alias, tenant, body.start, body.end, actor):
                target.audit(
                    actor, "drift.baseline.set", body.alias, {k: answer[k] for k in ("tenant", "start", "end")}
                )

        baseline_changes.interval = gateway.config.drift.manual_check_interval  # a reload may change it
        with baseline_changes.admit(tenant, body.alias, operator=principal_of(request).is_operator):
            await blocking(save)
        return json_response(answer)

    async def get_baseline(request: Request) -> Response:
        """``GET /admin/drift/baseline?alias=``: the pinned baseline of a scope (404 when none)."""
        query = parse_query(request, ScopeQuery)
        tenant = _tenant_for(request, query.tenant) or NO_TENANT
        found = await blocking(lambda: WindowStore(store()).baseline(query.alias, tenant))
        if found is None:
            raise NotFoundError(f"No drift baseline for '{query.alias}'.", param="alias", code="baseline_not_found")
        return json_response({"alias": query.alias, "tenant": tenant or None, "start": found[0], "end": found[1]})

    async def delete_baseline(request: Request) -> Response:
        """``DELETE /admin/drift/baseline?alias=``: back to the configured reference."""
        query = parse_query(request, ScopeQuery)
        tenant = _tenant_for(request, query.tenant) or NO_TENANT
        actor = actor_of(request)

        def remove() -> bool:
            target = store()
            removed = WindowStore(target).clear_baseline(query.alias, tenant)
            if removed:
                target.audit(actor, "drift.baseline.delete", query.alias, {"tenant": tenant or None})
            return removed

        if not await blocking(remove):
            raise NotFoundError(f"No drift baseline for '{query.alias}'.", param="alias", code="baseline_not_found")
        return json_response({"deleted": True})

    return [
        Route("/admin/drift/status", status, methods=["GET"]),
        Route("/admin/drift/checks", checks, methods=["GET"]),
        Route("/admin/drift/check", check, methods=["POST"]),
        Route("/admin/drift/baseline", get_baseline, methods=["GET"]),
        Route("/admin/drift/baseline", put_baseline, methods=["PUT"]),
        Route("/admin/drift/baseline", delete_baseline, methods=["DELETE"]),
    ]


__all__ = ["GLOBAL", "drift_routes"]
