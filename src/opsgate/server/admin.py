"""The admin JSON API over the request log: search, fetch, export, usage, erasure and the audit trail.

Every store call runs in a worker thread (the store is synchronous SQL), so a slow query never
stalls the event loop that serves ``/v1``. Errors use the OpenAI shape, like the rest of the gateway.

Authentication and role checks happen before these handlers (``server/access.py``); each handler
scopes what it returns to the caller's tenant, so a tenant's key never sees another tenant's data.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, Protocol

from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from opsgate.domain.errors import GatewayError, InvalidRequestError, NotFoundError
from opsgate.server.access import actor_of, principal_of, require_operator, scoped_tenant
from opsgate.server.http_io import json_response, read_json_value
from opsgate.server.query_params import NoQuery, QueryModel, Time, one_of, parse_query, whole_number
from opsgate.store.crypto import KeyError_
from opsgate.store.export import EXPORT_MEDIA_TYPES, export_chunks, require_export_format
from opsgate.store.query import MAX_PAGE, check_params, query_from_params
from opsgate.store.record_log import RecordLog
from opsgate.store.sql import RELEASE_DIMENSIONS, USAGE_DIMENSIONS

_MAX_BODY_BYTES = 64 * 1024


class RecordLogHolder(Protocol):
    """What the admin API needs from the gateway: its request log, if one is configured."""

    record_log: RecordLog | None


class RecordLogDisabled(GatewayError):
    """The gateway runs without a durable request log, so there is nothing to query."""

    status = 501
    error_type = "not_configured"


class PayloadUnreadable(GatewayError):
    """A record's payloads were encrypted with a key this gateway does not hold."""

    status = 500
    error_type = "server_error"


# -- routes -----------------------------------------------------------------------------------------

AdminHandler = Callable[[Request, RecordLog], Awaitable[Response]]


def _admin(holder: RecordLogHolder, handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: require a request log (errors are rendered by the app's GatewayError handler)."""

    async def endpoint(request: Request) -> Response:
        return await handler(request, require_record_log(holder))

    return endpoint


def require_record_log(holder: RecordLogHolder, why: str = "so the admin API has no records") -> RecordLog:
    """The gateway's request log; 501 when none is configured."""
    if holder.record_log is None:
        raise RecordLogDisabled(
            f"The request log is not configured (record.store is unset), {why}.",
            code="record_store_not_configured",
        )
    return holder.record_log


def _anchor(raw: object) -> tuple[int, str]:
    seq, _, digest = str(raw).partition(":")
    if not re.fullmatch(r"[0-9]{1,18}", seq) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise ValueError("must be SEQ:HASH (a 64-digit hex SHA-256)")
    return int(seq), digest.lower()


class UsageQuery(QueryModel):
    """``/admin/usage``'s parameters."""

    by: Annotated[str, one_of([*USAGE_DIMENSIONS, *RELEASE_DIMENSIONS])] = "model"
    since: Time | None = None
    until: Time | None = None
    tenant: str | None = None


class AuditQuery(QueryModel):
    """``/admin/audit``'s parameters."""

    limit: Annotated[int, whole_number(1, MAX_PAGE)] = 100


class VerifyQuery(QueryModel):
    """``/admin/audit/verify``'s parameters: ``anchor`` is ``SEQ:HASH`` from an earlier walk."""

    anchor: Annotated[tuple[int, str] | None, BeforeValidator(_anchor)] = None


def _open_payloads(record_log: RecordLog, record_id: str) -> dict[str, Any] | None:
    try:
        return record_log.get(record_id)
    except KeyError_ as error:
        raise PayloadUnreadable(f"Cannot open the payloads of '{record_id}': {error}.", code="payload_key") from None


async def search_requests(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/requests``: one page of matching records (newest first) and the next page's cursor."""
    check_params(request.query_params, request.path_params)
    query = query_from_params(dict(request.query_params), request.query_params.getlist("tag"))
    query.tenant = scoped_tenant(request, query.tenant)
    rows, cursor = await run_in_threadpool(record_log.search, query)
    return json_response({"object": "list", "data": rows, "next_cursor": cursor})


async def get_request(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/requests/{id}``: one record with its request and response payloads."""
    parse_query(request, NoQuery)
    record_id = request.path_params["id"]
    record = await run_in_threadpool(_open_payloads, record_log, record_id)
    if record is not None and not principal_of(request).can_read_tenant(record.get("tenant")):
        record = None  # another tenant's record is indistinguishable from a missing one
    if record is None:
        raise NotFoundError(f"No request record with id '{record_id}'.", param="id", code="record_not_found")
    return json_response(record)


async def export_requests(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/requests/export``: every matching record, streamed as JSONL, CSV or Parquet."""
    check_params(request.query_params, request.path_params)
    params = dict(request.query_params)
    export_format = require_export_format(params.pop("format", "jsonl"))
    query = query_from_params(params, request.query_params.getlist("tag"))
    query.tenant = scoped_tenant(request, query.tenant)
    records: Iterator[dict[str, Any]] = record_log.iter_records(query)
    if "limit" in params:  # the page-size filter doubles as a cap on how many records to export
        records = itertools.islice(records, query.limit)
    # Fetch the first record before answering, so an unreachable store is a clean 503, not a cut stream.
    first = await run_in_threadpool(next, records, None)
    if first is not None:
        records = itertools.chain([first], records)
    filename = f"requests.{export_format}"
    return StreamingResponse(
        export_chunks(records, export_format),
        media_type=EXPORT_MEDIA_TYPES[export_format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def erase_user(request: Request, record_log: RecordLog) -> Response:
    """``POST /admin/erasure`` with ``{"user": "..."}``: delete the user's records; counts before/after."""
    # A data subject's erasure spans every tenant (their records, rollups and late journal lines).
    require_operator(request, "erase a user's records")
    parse_query(request, NoQuery)
    body = await read_json_value(request, _MAX_BODY_BYTES)
    user = body.get("user") if isinstance(body, dict) else None
    if not isinstance(user, str) or not user.strip():
        raise InvalidRequestError('The body must be {"user": "<user id>"} with a non-empty user.', param="user")
    result = await run_in_threadpool(record_log.erase_user, user, actor_of(request))
    return json_response(result)


async def usage(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/usage?by=model|user|day|tenant&since=&until=&tenant=``: requests, tokens and cost."""
    query = parse_query(request, UsageQuery)
    if query.since is not None and query.until is not None and query.since > query.until:
        raise InvalidRequestError("since is after until.", param="since")
    tenant = scoped_tenant(request, query.tenant)
    rows = await run_in_threadpool(record_log.usage, query.by, query.since, query.until, tenant)
    return json_response({"object": "list", "by": query.by, "data": rows})


async def audit(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/audit?limit=``: the newest audit entries (erasures and other admin actions)."""
    require_operator(request, "read the audit log")
    limit = parse_query(request, AuditQuery).limit
    entries = await run_in_threadpool(lambda: record_log.store.audit_entries(limit))
    return json_response({"object": "list", "data": entries})


async def verify_audit(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/audit/verify[?anchor=SEQ:HASH]``: walk the audit hash chain; ``ok`` false names the
    first broken ``seq``. Always 200 when the walk ran: a broken chain is a finding, not a failed request."""
    require_operator(request, "verify the audit log")
    anchor = parse_query(request, VerifyQuery).anchor
    report = await run_in_threadpool(record_log.verify_audit, anchor)
    return json_response(report.to_dict())


def admin_routes(holder: RecordLogHolder) -> list[Route]:
    """The ``/admin`` routes over ``holder``'s request log."""
    return [
        Route("/admin/requests", _admin(holder, search_requests), methods=["GET"]),
        # Before the {id} route, which would otherwise take "export" as an id.
        Route("/admin/requests/export", _admin(holder, export_requests), methods=["GET"]),
        Route("/admin/requests/{id}", _admin(holder, get_request), methods=["GET"]),
        Route("/admin/erasure", _admin(holder, erase_user), methods=["POST"]),
        Route("/admin/usage", _admin(holder, usage), methods=["GET"]),
        Route("/admin/audit", _admin(holder, audit), methods=["GET"]),
        Route("/admin/audit/verify", _admin(holder, verify_audit), methods=["GET"]),
    ]
