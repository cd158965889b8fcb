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
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from opsgate.domain.errors import GatewayError, InvalidRequestError, NotFoundError
from opsgate.evals.analysis import RunNotFound, compare_runs, gate_runs
from opsgate.evals.dataset import DatasetError, ItemError, parse_item
from opsgate.evals.report import pick_quality, render_html, render_markdown, report_rows
from opsgate.evals.stats import parse_percent
from opsgate.evals.store import ANY_TENANT, EvalStore, TenantScope
from opsgate.server.access import actor_of, principal_of, scoped_tenant
from opsgate.server.admin import RecordLogDisabled, RecordLogHolder
from opsgate.server.http_io import ADMIN_MAX_BODY_BYTES, error_response, json_response, read_json_value
from opsgate.store.query import check_params

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")
MAX_ITEMS_PAGE = 1000
MAX_REPORT_RUNS = 20

EvalHandler = Callable[[Request, EvalStore], Awaitable[Response]]


def _evals(holder: RecordLogHolder, handler: EvalHandler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            if holder.record_log is None:
                raise RecordLogDisabled(
                    "The record store is not configured (record.store), so there are no evaluation tables.",
                    code="record_store_not_configured",
                )
            check_params(request.query_params, request.path_params)
            for name, value in request.path_params.items():
                if not _ID.fullmatch(str(value)):
                    raise NotFoundError(f"No evaluation {name} '{str(value)[:100]}'.", param=name, code="not_found")
            return await handler(request, EvalStore(holder.record_log.store))
        except GatewayError as error:
            return error_response(error)

    return endpoint


def scope_of(request: Request) -> TenantScope:
    """What the caller may read: everything (an operator) or its own tenant."""
    principal = principal_of(request)
    return ANY_TENANT if principal.is_operator else principal.tenant


def _only(request: Request, known: set[str]) -> dict[str, str]:
    params = dict(request.query_params)
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidRequestError(
            f"Unknown parameter '{unknown[0]}'. Known: {', '.join(sorted(known))}.", param=unknown[0]
        )
    return params


def _limit(params: dict[str, str], default: int, high: int) -> int:
    raw = params.get("limit")
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= high:
        raise InvalidRequestError(f"limit must be a whole number from 1 to {high}.", param="limit")
    return int(raw)


def _run_id(value: str | None, name: str) -> str:
    if not value or not _ID.fullmatch(value):
        raise InvalidRequestError(f"{name} must be a run id.", param=name)
    return value


async def _dataset_or_404(store: EvalStore, request: Request, ref: str) -> Any:
    version = await run_in_threadpool(store.find_dataset, scope_of(request), ref)
    if version is None:
        raise NotFoundError(f"No evaluation dataset '{ref}'.", param="dataset", code="dataset_not_found")
    return version


async def list_datasets(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/datasets``: dataset versions, newest first."""
    params = _only(request, {"limit"})
    versions = await run_in_threadpool(store.list_datasets, scope_of(request), _limit(params, 100, 1000))
    return json_response({"object": "list", "data": [v.to_dict() for v in versions]})


async def create_dataset(request: Request, store: EvalStore) -> Response:
    """``POST /admin/evals/datasets`` with ``{"name", "items": [...], "tenant"?}``: the next version
    (bodies are capped at 64 KiB; import larger files with ``opsgate eval dataset import``)."""
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
    params = _only(request, {"limit"})
    version = await _dataset_or_404(store, request, request.path_params["dataset"])
    items = await run_in_threadpool(store.dataset_items, version.id)
    shown = [i.to_dict() for i in items[: _limit(params, 100, MAX_ITEMS_PAGE)]]
    return json_response({**version.to_dict(), "data": shown})


async def export_dataset(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/datasets/{dataset}/export``: the version as JSONL."""
    _only(request, set())
    version = await _dataset_or_404(store, request, request.path_params["dataset"])
    items = await run_in_threadpool(store.dataset_items, version.id)
    body = b"".join(orjson.dumps(i.to_dict()) + b"\n" for i in items)
    filename = f"{version.name}-v{version.version}.jsonl"
    return Response(
        body, media_type="application/x-ndjson", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


async def list_runs(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/runs``: runs, newest first."""
    params = _only(request, {"limit"})
    runs = await run_in_threadpool(store.list_runs, scope_of(request), _limit(params, 50, 1000))
    return json_response({"object": "list", "data": runs})


async def _run_or_404(store: EvalStore, request: Request, run_id: str) -> dict[str, Any]:
    run = await run_in_threadpool(store.get_run, scope_of(request), run_id)
    if run is None:
        raise NotFoundError(f"No evaluation run '{run_id}'.", param="run", code="run_not_found")
    return run


async def get_run(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/runs/{run}``: a run with its settings and summary."""
    _only(request, set())
    return json_response(await _run_or_404(store, request, request.path_params["run"]))


async def run_items(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/runs/{run}/items?limit=&after=``: items with input, output, scores and judge reasons."""
    params = _only(request, {"limit", "after"})
    run = await _run_or_404(store, request, request.path_params["run"])
    after = params.get("after") or None
    if after is not None and not _ID.fullmatch(after):
        raise InvalidRequestError("after must be an item key this API returned.", param="after")
    limit = _limit(params, 100, MAX_ITEMS_PAGE)
    items = await run_in_threadpool(lambda: list(store.iter_items(run["id"], after, limit)))
    cursor = items[-1]["item_key"] if len(items) == limit else None
    return json_response({"object": "list", "data": items, "next_after": cursor})


def _pair(params: dict[str, str]) -> tuple[str, str]:
    return _run_id(params.get("baseline"), "baseline"), _run_id(params.get("candidate"), "candidate")


async def compare(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/compare?baseline=&candidate=[&scorer=]``: per-scorer paired comparison."""
    params = _only(request, {"baseline", "candidate", "scorer"})
    baseline, candidate = _pair(params)
    scorers = request.query_params.getlist("scorer") or None
    try:
        comparisons, base_fail, cand_fail, header = await run_in_threadpool(
            compare_runs, store, scope_of(request), baseline, candidate, scorers
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
    params = _only(request, {"baseline", "candidate", "max_degradation", "scorer"})
    baseline, candidate = _pair(params)
    try:
        limit = parse_percent(params.get("max_degradation") or "5%")
    except ValueError as error:
        raise InvalidRequestError(str(error), param="max_degradation") from None
    scorers = request.query_params.getlist("scorer") or None
    try:
        result, header = await run_in_threadpool(
            gate_runs, store, scope_of(request), baseline, candidate, limit, scorers
        )
    except RunNotFound as error:
        raise NotFoundError(f"{error}.", code="run_not_found") from None
    return json_response({**header, **result.to_dict()})


async def report(request: Request, store: EvalStore) -> Response:
    """``GET /admin/evals/report?run=…&run=…[&quality=][&format=json|md|html]``: the model choice report."""
    _only(request, {"run", "quality", "format"})
    run_ids = request.query_params.getlist("run")
    if not run_ids or len(run_ids) > MAX_REPORT_RUNS:
        raise InvalidRequestError(f"give 1 to {MAX_REPORT_RUNS} run parameters.", param="run")
    fmt = request.query_params.get("format") or "json"
    if fmt not in ("json", "md", "html"):
        raise InvalidRequestError("format must be json, md or html.", param="format")
    runs = [await _run_or_404(store, request, _run_id(r, "run")) for r in run_ids]
    rows = report_rows(runs, request.query_params.get("quality") or pick_quality(runs))
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
