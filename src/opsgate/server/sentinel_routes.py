"""``/admin/sentinel``: golden-prompt baselines, runs and behaviour changes (``drift/sentinel_*.py``).

A deployment's behaviour is not a tenant's data, and a run calls every deployment of an alias, so
every route is operator-only, reads included (a tenant's key gets 403 ``operator_only``, as for
``/admin/releases``). Runs and re-baselines answer when they are done (golden prompts are few);
one at a time per replica (409 ``sentinel_busy`` otherwise).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from opsgate.domain.errors import GatewayError, InvalidRequestError, NotFoundError
from opsgate.drift.sentinel_runner import watched
from opsgate.drift.sentinel_service import SentinelBusy, SentinelService
from opsgate.drift.sentinel_store import SentinelStore
from opsgate.server.access import actor_of, require_operator
from opsgate.server.admin import RecordLogDisabled
from opsgate.server.http_io import json_response, read_json_value
from opsgate.server.query_params import NoQuery, QueryModel, parse_query

_MAX_BODY_BYTES = 4096
_MAX_TEXT = 200
_RUN_ID = re.compile(r"^sen_[0-9a-f]{1,40}$")
Handler = Callable[[Request], Awaitable[Response]]
_RUN_FIELDS = frozenset({"alias", "deployment"})


def _text(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequestError(f"{name} is required.", param=name, code="missing_field")
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise InvalidRequestError(f"{name} must be a string of 1 to {_MAX_TEXT} characters.", param=name)
    if "\x00" in value:
        raise InvalidRequestError(f"{name} must not contain a NUL character.", param=name)
    return value


async def _body(request: Request) -> dict[str, Any]:
    body = await read_json_value(request, _MAX_BODY_BYTES, empty={})
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.", code="invalid_body")
    unknown = sorted(set(body) - _RUN_FIELDS)
    if unknown:
        raise InvalidRequestError(f"Unknown field '{unknown[0][:100]}'.", param=unknown[0][:100], code="unknown_field")
    return body


class RunsQuery(QueryModel):
    """``GET /admin/sentinel/runs``: newest first, optionally one alias/deployment or changes only."""

    limit: int = Field(50, ge=1, le=500, strict=False)
    alias: str | None = Field(None, max_length=_MAX_TEXT)
    deployment: str | None = Field(None, max_length=_MAX_TEXT)
    changed: Literal["true", "false"] = "false"

    @field_validator("limit", mode="before")
    @classmethod
    def _ascii_digits(cls, value: object) -> object:
        # int() takes '²' and '٣' and ' 7 ': only ASCII digits are a limit.
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            raise ValueError("limit must be a whole number from 1 to 500")
        return value


def sentinel_routes(gateway: Any) -> list[Route]:
    """The ``/admin/sentinel`` routes over ``gateway``'s record store and sentinel service."""

    def service() -> SentinelService | None:
        return next((s for s in getattr(gateway, "services", []) if isinstance(s, SentinelService)), None)

    def store() -> SentinelStore:
        record_log = getattr(gateway, "record_log", None)
        if record_log is None:
            raise RecordLogDisabled(
                "The sentinel keeps its baselines and runs in the record store (record.store is unset).",
                code="record_store_not_configured",
            )
        return SentinelStore(record_log.store)

    def running() -> SentinelService:
        found = service()
        if found is None:
            raise InvalidRequestError(
                "The sentinel is not enabled (sentinel.enabled in the config).", status=409, code="sentinel_disabled"
            )
        return found

    def scope(body: dict[str, Any], alias_required: bool) -> tuple[str | None, str | None]:
        alias = _text(body, "alias", alias_required)
        deployment = _text(body, "deployment")
        aliases = watched(gateway.config)
        if alias is not None and alias not in aliases:
            raise NotFoundError(
                f"The sentinel watches no model '{alias[:100]}'.", param="alias", code="model_not_found"
            )
        if deployment is not None:
            labels = aliases[alias] if alias is not None else [d for ds in aliases.values() for d in ds]
            if deployment not in labels:
                raise NotFoundError(
                    f"The sentinel watches no deployment '{deployment[:100]}'" + (f" of '{alias}'." if alias else "."),
                    param="deployment",
                    code="deployment_not_found",
                )
        return alias, deployment

    def guarded(
        what: str, handler: Callable[[Request], Awaitable[Response]], takes_query: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            require_operator(request, what)
            if not takes_query:
                parse_query(request, NoQuery)  # an unknown parameter is a 400, never silently ignored
            return await handler(request)

        return endpoint

    async def status(request: Request) -> Response:
        found = service()
        body: dict[str, Any] = found.status() if found is not None else {"enabled": False}
        body["object"] = "sentinel.status"
        if getattr(gateway, "record_log", None) is not None:
            sentinel_store = store()
            body["store"] = await asyncio.to_thread(sentinel_store.counts)
            body["schedule"] = await asyncio.to_thread(sentinel_store.lease)
            body["latest_changes"] = await asyncio.to_thread(sentinel_store.list_runs, 10, None, None, True)
        return json_response(body)

    async def list_runs(request: Request) -> Response:
        query = parse_query(request, RunsQuery)
        data = await asyncio.to_thread(
            store().list_runs, query.limit, query.alias, query.deployment, query.changed == "true"
        )
        return json_response({"object": "list", "data": data})

    async def get_run(request: Request) -> Response:
        run_id = request.path_params["run"]
        if not _RUN_ID.match(run_id):
            raise NotFoundError(f"No sentinel run '{run_id[:100]}'.", param="run", code="run_not_found")
        run = await asyncio.to_thread(store().get_run, run_id)
        if run is None:
            raise NotFoundError(f"No sentinel run '{run_id}'.", param="run", code="run_not_found")
        return json_response(run)

    async def run_now(request: Request) -> Response:
        body = await _body(request)
        alias, deployment = scope(body, alias_required=False)
        return await _start(request, alias, deployment, rebaseline=False)

    async def baseline(request: Request) -> Response:
        body = await _body(request)
        alias, deployment = scope(body, alias_required=True)
        return await _start(request, alias, deployment, rebaseline=True)

    async def _start(request: Request, alias: str | None, deployment: str | None, rebaseline: bool) -> Response:
        sentinel = running()
        try:
            runs = await sentinel.run_now(alias, deployment, actor_of(request), rebaseline, kind="manual")
        except RuntimeError as error:  # the models never became ready
            raise GatewayError(str(error), status=503, code="sentinel_unavailable") from None
        except SentinelBusy:
            raise InvalidRequestError(
                "A sentinel run is in progress on this replica; try again when it is done.",
                status=409,
                code="sentinel_busy",
            ) from None
        return json_response({"object": "list", "data": runs})

    return [
        Route("/admin/sentinel/status", guarded("read the sentinel", status), methods=["GET"]),
        Route("/admin/sentinel/runs", guarded("read sentinel runs", list_runs, takes_query=True), methods=["GET"]),
        Route("/admin/sentinel/runs/{run}", guarded("read sentinel runs", get_run), methods=["GET"]),
        Route("/admin/sentinel/run", guarded("run the sentinel", run_now), methods=["POST"]),
        Route("/admin/sentinel/baseline", guarded("re-baseline the sentinel", baseline), methods=["POST"]),
    ]
