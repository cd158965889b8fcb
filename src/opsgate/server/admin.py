"""The admin JSON API over the request log: search, fetch, export, usage, erasure and the audit trail.

Every store call runs in a worker thread (the store is synchronous SQL), so a slow query never
stalls the event loop that serves ``/v1``. Errors use the OpenAI shape, like the rest of the gateway.

No authentication yet: whoever reaches the port can read and erase records. Admin auth comes in
a later issue; until then, bind the gateway to a trusted interface.
"""

from __future__ import annotations

import csv
import importlib
import io
import itertools
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from opsgate.domain.errors import GatewayError, InvalidRequestError, NotFoundError
from opsgate.server.http_io import error_response, json_response, read_json_body
from opsgate.store.crypto import KeyError_
from opsgate.store.query import MAX_PAGE, parse_time, query_from_params
from opsgate.store.record_log import RecordLog
from opsgate.store.sql import LIST_COLUMNS, USAGE_DIMENSIONS

ERASURE_ACTOR = "admin-api"  # becomes the authenticated principal once admin auth lands
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


# -- export encoders (shared with ``opsgate logs export``) ------------------------------------------

EXPORT_COLUMNS: tuple[str, ...] = (*LIST_COLUMNS, "request", "response")
EXPORT_MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
_FLOAT_COLUMNS = {"ts", "latency_ms", "ttft_ms", "cost"}
_INT_COLUMNS = {"status", "prompt_tokens", "completion_tokens", "cached_tokens"}
_BOOL_COLUMNS = {"stream", "cached"}
_CHUNK_BYTES = 64 * 1024
_PARQUET_ROW_GROUP = 1000


def _pyarrow() -> tuple[Any, Any] | None:
    """``(pyarrow, pyarrow.parquet)`` when installed (an optional dependency), else None."""
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError:
        return None


def require_export_format(name: str) -> str:
    """``name`` if it is an export format this process can write, else a 400 saying why not."""
    if name not in EXPORT_MEDIA_TYPES:
        raise InvalidRequestError(f"format must be one of {', '.join(EXPORT_MEDIA_TYPES)}.", param="format")
    if name == "parquet" and _pyarrow() is None:
        raise InvalidRequestError(
            "Parquet export needs pyarrow, which is not installed here (pip install pyarrow); "
            "use format=jsonl or format=csv.",
            param="format",
            code="pyarrow_not_installed",
        )
    return name


def _csv_cell(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool | dict | list) or column in ("request", "response"):
        return orjson.dumps(value).decode()
    return value


def _parquet_cell(column: str, value: Any) -> Any:
    if column in _FLOAT_COLUMNS | _INT_COLUMNS | _BOOL_COLUMNS or value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _jsonl(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for record in records:
        yield orjson.dumps(record) + b"\n"


def _csv(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    for record in itertools.chain([None], records):
        if record is not None:
            writer.writerow([_csv_cell(c, record.get(c)) for c in EXPORT_COLUMNS])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()


class _Drain:
    """A write-only file for pyarrow whose bytes are taken away as soon as each row group is written."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def _parquet(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    modules = _pyarrow()
    if modules is None:
        raise InvalidRequestError("Parquet export needs pyarrow.", param="format")
    pa, pq = modules

    def arrow_type(column: str) -> Any:
        if column in _FLOAT_COLUMNS:
            return pa.float64()
        if column in _INT_COLUMNS:
            return pa.int64()
        return pa.bool_() if column in _BOOL_COLUMNS else pa.string()

    schema = pa.schema([(column, arrow_type(column)) for column in EXPORT_COLUMNS])
    sink = _Drain()
    writer = pq.ParquetWriter(sink, schema)
    records = iter(records)
    while batch := list(itertools.islice(records, _PARQUET_ROW_GROUP)):
        columns = {c: [_parquet_cell(c, r.get(c)) for r in batch] for c in EXPORT_COLUMNS}
        writer.write_table(pa.table(columns, schema=schema))
        yield sink.take()
    writer.close()
    yield sink.take()


def export_chunks(records: Iterable[dict[str, Any]], export_format: str) -> Iterator[bytes]:
    """``records`` encoded as ``export_format``, in chunks of about 64 KiB (never the whole export at once)."""
    encoders = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}
    pending: list[bytes] = []
    size = 0
    for part in encoders[export_format](records):
        pending.append(part)
        size += len(part)
        if size >= _CHUNK_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


# -- routes -----------------------------------------------------------------------------------------

AdminHandler = Callable[[Request, RecordLog], Awaitable[Response]]


def _admin(holder: RecordLogHolder, handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: require a request log and render every GatewayError in the OpenAI shape."""

    async def endpoint(request: Request) -> Response:
        try:
            if holder.record_log is None:
                raise RecordLogDisabled(
                    "The request log is not configured (record.store is unset), so the admin API has no records.",
                    code="record_store_not_configured",
                )
            return await handler(request, holder.record_log)
        except GatewayError as error:
            return error_response(error)

    return endpoint


def _reject_unknown(params: dict[str, str], known: set[str]) -> None:
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidRequestError(
            f"Unknown parameter '{unknown[0]}'. Known: {', '.join(sorted(known))}.", param=unknown[0]
        )


def _whole_number(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be a whole number from {low} to {high}.", param=name)
    return value


def _open_payloads(record_log: RecordLog, record_id: str) -> dict[str, Any] | None:
    try:
        return record_log.get(record_id)
    except KeyError_ as error:
        raise PayloadUnreadable(f"Cannot open the payloads of '{record_id}': {error}.", code="payload_key") from None


async def search_requests(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/requests``: one page of matching records (newest first) and the next page's cursor."""
    query = query_from_params(dict(request.query_params), request.query_params.getlist("tag"))
    rows, cursor = await run_in_threadpool(record_log.search, query)
    return json_response({"object": "list", "data": rows, "next_cursor": cursor})


async def get_request(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/requests/{id}``: one record with its request and response payloads."""
    record_id = request.path_params["id"]
    record = await run_in_threadpool(_open_payloads, record_log, record_id)
    if record is None:
        raise NotFoundError(f"No request record with id '{record_id}'.", param="id", code="record_not_found")
    return json_response(record)


async def export_requests(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/requests/export``: every matching record, streamed as JSONL, CSV or Parquet."""
    params = dict(request.query_params)
    export_format = require_export_format(params.pop("format", "jsonl"))
    query = query_from_params(params, request.query_params.getlist("tag"))
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
    raw = await read_json_body(request, _MAX_BODY_BYTES)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("The body is not valid JSON.", code="invalid_json") from None
    user = body.get("user") if isinstance(body, dict) else None
    if not isinstance(user, str) or not user.strip():
        raise InvalidRequestError('The body must be {"user": "<user id>"} with a non-empty user.', param="user")
    result = await run_in_threadpool(record_log.erase_user, user, ERASURE_ACTOR)
    return json_response(result)


async def usage(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/usage?by=model|user|day|tenant&since=&until=&tenant=``: requests, tokens and cost."""
    params = dict(request.query_params)
    _reject_unknown(params, {"by", "since", "until", "tenant"})
    by = params.get("by") or "model"
    if by not in USAGE_DIMENSIONS:
        raise InvalidRequestError(f"by must be one of {', '.join(USAGE_DIMENSIONS)}.", param="by")
    since = parse_time(params["since"], "since") if params.get("since") else None
    until = parse_time(params["until"], "until") if params.get("until") else None
    if since is not None and until is not None and since > until:
        raise InvalidRequestError("since is after until.", param="since")
    rows = await run_in_threadpool(record_log.usage, by, since, until, params.get("tenant") or None)
    return json_response({"object": "list", "by": by, "data": rows})


async def audit(request: Request, record_log: RecordLog) -> Response:
    """``GET /admin/audit?limit=``: the newest audit entries (erasures and other admin actions)."""
    params = dict(request.query_params)
    _reject_unknown(params, {"limit"})
    limit = _whole_number(params["limit"], "limit", 1, MAX_PAGE) if params.get("limit") else 100
    entries = await run_in_threadpool(lambda: record_log.store.audit_entries(limit))
    return json_response({"object": "list", "data": entries})


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
    ]
