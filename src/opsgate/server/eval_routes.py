"""``/admin/evals/…``: datasets, runs, items, comparisons, the gate and reports over HTTP.

The same library calls as ``opsgate eval`` (``opsgate.evals``), in worker threads. Roles come from
``server/access.py`` by path (reads need ``read``, the dataset upload ``write``); every handler
scopes to the caller's tenant — another tenant's dataset or run is a 404, exactly like a missing
one — and every client mistake (bad id, unknown parameter, bad item) is a 4xx in the OpenAI shape.
Runs are started from the CLI (a run is long work that belongs in a job, not a request).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from pydantic import BeforeValidator, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from opsgate.domain.errors import InvalidRequestError, NotFoundError
from opsgate.evals.analysis import RunNotFound, compare_runs, gate_runs
from opsgate.evals.dataset import DatasetError, ItemError, parse_item
from opsgate.evals.item_text import open_items
from opsgate.evals.report import pick_quality, render_html, render_markdown, report_rows
from opsgate.evals.stats import parse_percent
from opsgate.evals.store import ANY_TENANT, EvalStore, TenantScope
from opsgate.releases.shadow import ItemPayloads
from opsgate.server.access import actor_of, principal_of, scoped_tenant
from opsgate.server.admin import RecordLogHolder, require_record_log
from opsgate.server.http_io import ADMIN_MAX_BODY_BYTES, json_response, read_json_value
from opsgate.server.query_params import NoQuery, QueryModel, one_of, parse_query, whole_number
from opsgate.store.query import check_params

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")
MAX_ITEMS_PAGE = 1000
MAX_REPORT_RUNS = 20

EvalHandler = Callable[[Request, EvalStore], Awaitable[Response]]


def _evals(holder: RecordLogHolder, handler: EvalHandler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        record_log = require_record_log(holder, "so there are no evaluation tables")
        check_params(request.query_params, request.path_params)
        for name, value in request.path_params.items():
            if not _ID.fullmatch(str(value)):
                raise NotFoundError(f"No evaluation {name} '{str(value)[:100]}'.", param=name, code="not_found")
        # Items' sealed text opens with the request log's own cipher (evals/item_text.py).
        request.state.item_payloads = ItemPayloads.of(record_log)
        return await handler(request, EvalStore(record_log.store))

    return endpoint


def scope_of(request: Request) -> TenantScope:
    """What the caller may read: everything (an operator) or its own tenant."""
    principal = principal_of(request)
    return ANY_TENANT if principal.is_operator else principal.tenant


def _run_id(raw: object) -> str:
    if not isinstance(raw, str) or not _ID.fullmatch(raw):
        raise ValueError("must be a run id")
    return raw


def _item_key(raw: object) -> str:
    if not isinstance(raw, str) or not _ID.fullmatch(raw):
        raise ValueError("must be an item key this API returned")
    return raw


def _percent(raw: object) -> float:
    return parse_percent(str(raw))  # ValueError names what is wrong


RunId = Annotated[str, BeforeValidator(_run_id)]


class PageQuery(QueryModel):
    """A page of datasets or runs."""

    limit: Annotated[int, whole_number(1, 1000)] | None = None


class DatasetQuery(QueryModel):
    """How many of a dataset version's items to show."""

    limit: Annotated[int, whole_number(1, MAX_ITEMS_PAGE)] = 100


class ItemsQuery(DatasetQuery):
    """A page of a run's items, after the last key of the page before."""

    after: Annotated[str, BeforeValidator(_item_key)] | None = None


class CompareQuery(QueryModel):
    """Two runs to compare, optionally on some scorers only."""

    baseline: RunId
    candidate: RunId
    scorer: list[str] = []


class GateQuery(CompareQuery):
    """The gate: a comparison and the degradation it tolerates (``5%``)."""

    max_degradation: Annotated[float, BeforeValidator(_percent)] = 0.05


class ReportQuery(QueryModel):
    """The model-choice report over 1 to ``MAX_REPORT_RUNS`` runs."""

    run: Annotated[list[RunId], Field(min_length=1, max_length=MAX_REPORT_RUNS)]
    quality: str | None = None
    format: Annotated[str, one_of(("json", "md", "html"))] = "json"


async def _dataset_or_404(store: EvalStore, request: Request, ref: str) -> Any:
    version = await run_in_threadpool(store.find_dataset, scope_of(request), ref)
    if version is None:
        raise NotFoundError(f"No evaluation dataset '{ref}'.", param="dataset", code="dataset_not_found")
    return version


async def list_datasets(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/datasets``: dataset versions, newest first."""
    limit = parse_query(request, PageQuery).limit or 100
    versions = await run_in_threadpool(store.list_datasets, scope_of(request), limit)
    return json_response({"object": "list", "data": [v.to_dict() for v in versions]})


async def create_dataset(request: Request, store: EvalStore) -> Response:
    """``POST /admin/evals/datasets`` with ``{"name", "items": [...], "tenant"?}``: the next version
    (bodies are capped at 64 KiB; import larger files with ``opsgate eval dataset import``)."""
    parse_query(request, NoQuery)
    body = await read_json_value(request, ADMIN_MAX_BODY_BYTES)
    if not isinstance(body, dict):
        raise InvalidRequestError('The body must be {"name": ..., "items": [...]}.')
    unknown = sorted(set(body) - {"name", "items", "tenant"})
    if unknown:
        raise InvalidRequestError(f"Unknown field '{unknown[0]}'.", param=unknown[0])
    name, raw_items = body.get("name"), body.get("items")
    if not isinstance(name, str):
        raise InvalidRequestError("name must be a string.", param="name")
    if not isinstance(raw_items, list) or not raw_items:
        raise InvalidRequestError("items must be a non-empty list.", param="items")
    tenant = body.get("tenant")
    if tenant is not None and not isinstance(tenant, str):
        raise InvalidRequestError("tenant must be a string.", param="tenant")
    tenant = scoped_tenant(request, tenant)
    items = []
    for index, raw in enumerate(raw_items):
        try:
            items.append(parse_item(raw))
        except ItemError as error:
            where = f"items[{index}]" + (f".{error.field}" if error.field else "")
            raise InvalidRequestError(f"{where}: {error.message}", param=where) from None
    try:
        version, created = await run_in_threadpool(
            store.save_dataset, tenant, name, items, {"api": True}, actor_of(request)
        )
    except DatasetError as error:
        raise InvalidRequestError(str(error), param="name") from None
    return json_response({**version.to_dict(), "created": created}, 201 if created else 200)


async def get_dataset(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/datasets/{dataset}``: a version (name, name@version or id) and its first items."""
    limit = parse_query(request, DatasetQuery).limit
    version = await _dataset_or_404(store, request, request.path_params["dataset"])
    items = await run_in_threadpool(store.dataset_items, version.id)
    shown = [i.to_dict() for i in items[:limit]]
    return json_response({**version.to_dict(), "data": shown})


async def export_dataset(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/datasets/{dataset}/export``: the version as JSONL."""
    parse_query(request, NoQuery)
    version = await _dataset_or_404(store, request, request.path_params["dataset"])
    items = await run_in_threadpool(store.dataset_items, version.id)
    body = b"".join(orjson.dumps(i.to_dict()) + b"\n" for i in items)
    filename = f"{version.name}-v{version.version}.jsonl"
    return Response(
        body, media_type="application/x-ndjson", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


async def list_runs(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/runs``: runs, newest first."""
    limit = parse_query(request, PageQuery).limit or 50
    runs = await run_in_threadpool(store.list_runs, scope_of(request), limit)
    return json_response({"object": "list", "data": runs})


async def _run_or_404(store: EvalStore, request: Request, run_id: str) -> dict[str, Any]:
    run = await run_in_threadpool(store.get_run, scope_of(request), run_id)
    if run is None:
        raise NotFoundError(f"No evaluation run '{run_id}'.", param="run", code="run_not_found")
    return run


async def get_run(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/runs/{run}``: a run with its settings and summary."""
    parse_query(request, NoQuery)
    return json_response(await _run_or_404(store, request, request.path_params["run"]))


async def run_items(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/runs/{run}/items?limit=&after=``: items with input, output, scores and judge reasons.

    Sealed text is opened; what does not open here reads ``null`` and is named in the item's ``sealed``."""
    run = await _run_or_404(store, request, request.path_params["run"])  # a missing run is a 404 first
    query = parse_query(request, ItemsQuery)
    limit = query.limit
    payloads: ItemPayloads = request.state.item_payloads
    items = await run_in_threadpool(lambda: open_items(store.iter_items(run["id"], query.after, limit), payloads))
    cursor = items[-1]["item_key"] if len(items) == limit else None
    return json_response({"object": "list", "data": items, "next_after": cursor})


async def compare(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/compare?baseline=&candidate=[&scorer=]``: per-scorer paired comparison."""
    query = parse_query(request, CompareQuery)
    try:
        comparisons, base_fail, cand_fail, header = await run_in_threadpool(
            compare_runs, store, scope_of(request), query.baseline, query.candidate, query.scorer or None
        )
    except RunNotFound as error:
        raise NotFoundError(f"{error}.", code="run_not_found") from None
    return json_response(
        {
            **header,
            "failure_rates": {"baseline": base_fail, "candidate": cand_fail},
            "comparisons": [c.to_dict() for c in comparisons],
        }
    )


async def gate(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/gate?baseline=&candidate=&max_degradation=5%``: the gate's verdict (200 either way)."""
    query = parse_query(request, GateQuery)
    try:
        result, header = await run_in_threadpool(
            gate_runs, store, scope_of(request), query.baseline, query.candidate, query.max_degradation,
            query.scorer or None,
        )  # fmt: skip
    except RunNotFound as error:
        raise NotFoundError(f"{error}.", code="run_not_found") from None
    return json_response({**header, **result.to_dict()})


async def report(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/report?run=…&run=…[&quality=][&format=json|md|html]``: the model choice report."""
    query = parse_query(request, ReportQuery)
    fmt = query.format
    runs = [await _run_or_404(store, request, run_id) for run_id in query.run]
    rows = report_rows(runs, query.quality or pick_quality(runs))
    if fmt == "json":
        return json_response({"object": "list", "data": rows})
    if fmt == "md":
        return Response(render_markdown(rows), media_type="text/markdown")
    from opsgate.evals.report import pareto_png

    png = await run_in_threadpool(pareto_png, rows)
    return HTMLResponse(render_html(rows, png))


def eval_routes(holder: RecordLogHolder) -> list[Route]:
    """The ``/admin/evals`` routes over ``holder``'s record store."""
    return [
        Route("/admin/evals/datasets", _evals(holder, list_datasets), methods=["GET"]),
        Route("/admin/evals/datasets", _evals(holder, create_dataset), methods=["POST"]),
        Route("/admin/evals/datasets/{dataset}", _evals(holder, get_dataset), methods=["GET"]),
        Route("/admin/evals/datasets/{dataset}/export", _evals(holder, export_dataset), methods=["GET"]),
        Route("/admin/evals/runs", _evals(holder, list_runs), methods=["GET"]),
        Route("/admin/evals/runs/{run}", _evals(holder, get_run), methods=["GET"]),
        Route("/admin/evals/runs/{run}/items", _evals(holder, run_items), methods=["GET"]),
        Route("/admin/evals/compare", _evals(holder, compare), methods=["GET"]),
        Route("/admin/evals/gate", _evals(holder, gate), methods=["GET"]),
        Route("/admin/evals/report", _evals(holder, report), methods=["GET"]),
    ]
