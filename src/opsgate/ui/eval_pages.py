"""``/ui/evals``: evaluation runs, a run's items (input, output, scores, judge reasons) and a comparison
of two runs with its Pareto plot. Rendered on the server from the same ``opsgate.evals`` calls as the
admin API, in a worker thread, scoped to the caller's tenant (another tenant's run is a 404)."""

from __future__ import annotations

import base64
import re
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from opsgate.domain.principal import Principal
from opsgate.evals.analysis import RunNotFound, compare_runs
from opsgate.evals.item_text import open_items
from opsgate.evals.report import pareto_png, pick_quality, report_rows
from opsgate.evals.store import ANY_TENANT, EvalStore, TenantScope
from opsgate.releases.shadow import ItemPayloads
from opsgate.store.record_log import RecordLog

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")
ITEMS_PER_PAGE = 100


class _Pages(Protocol):
    source: Any

    def render(self, request: Request, template: str, status: int = 200, /, **context: Any) -> Response: ...

    def guarded(self, page: str, handler: Any) -> Any: ...


def _scope(principal: Principal) -> TenantScope:
    return ANY_TENANT if principal.is_operator else principal.tenant


class EvalPages:
    """The evaluation pages of the dashboard."""

    def __init__(self, dashboard: _Pages) -> None:
        self.dash = dashboard

    def _store(self) -> EvalStore | None:
        record_log: RecordLog | None = self.dash.source.record_log
        return EvalStore(record_log.store) if record_log is not None else None

    def _payloads(self) -> ItemPayloads:
        return ItemPayloads.of(self.dash.source.record_log)

    def _missing(self, request: Request, principal: Principal, message: str, status: int = 404) -> Response:
        return self.dash.render(
            request, "message.html", status, principal=principal, page="evals", title="Not found", message=message
        )

    async def runs(self, request: Request, principal: Principal) -> Response:
        """``/ui/evals``: runs, newest first, with their main scores; pick two to compare."""
        store = self._store()
        if store is None:
            return self._missing(request, principal, "record.store is unset: no evaluation tables.", 501)
        runs = await run_in_threadpool(store.list_runs, _scope(principal), 200)
        return self.dash.render(request, "evals.html", principal=principal, page="evals", runs=runs)

    async def run(self, request: Request, principal: Principal) -> Response:
        """``/ui/evals/runs/{run}``: one run's items with scores and judge reasons."""
        store = self._store()
        run_id = request.path_params["run"]
        if store is None or not _ID.fullmatch(run_id):
            return self._missing(request, principal, "No such evaluation run.")
        run = await run_in_threadpool(store.get_run, _scope(principal), run_id)
        if run is None:
            return self._missing(request, principal, f"No evaluation run '{run_id}'.")
        after = request.query_params.get("after")
        if after is not None and not _ID.fullmatch(after):
            after = None
        payloads = self._payloads()
        items = await run_in_threadpool(lambda: open_items(store.iter_items(run_id, after, ITEMS_PER_PAGE), payloads))
        for item in items:  # the page shows a marker where text stays sealed (the API: null and ``sealed``)
            for field, key_id in item["sealed"].items():
                item[field] = f"[sealed: key {key_id!r} is not configured here]"
        next_after = items[-1]["item_key"] if len(items) == ITEMS_PER_PAGE else None
        return self.dash.render(
            request, "eval_run.html", principal=principal, page="evals", run=run, items=items, next_after=next_after
        )

    async def compare(self, request: Request, principal: Principal) -> Response:
        """``/ui/evals/compare?baseline=&candidate=``: per-scorer comparison and the Pareto plot."""
        store = self._store()
        baseline = request.query_params.get("baseline") or ""
        candidate = request.query_params.get("candidate") or ""
        if store is None or not _ID.fullmatch(baseline) or not _ID.fullmatch(candidate):
            return self._missing(request, principal, "Choose two runs to compare.", 400)
        scope = _scope(principal)
        try:
            comparisons, base_fail, cand_fail, header = await run_in_threadpool(
                compare_runs, store, scope, baseline, candidate, None
            )
        except RunNotFound as error:
            return self._missing(request, principal, f"{error}.")
        runs = [await run_in_threadpool(store.get_run, scope, r) for r in (baseline, candidate)]
        found = [r for r in runs if r is not None]
        rows = report_rows(found, pick_quality(found))
        png = await run_in_threadpool(pareto_png, rows)
        return self.dash.render(
            request,
            "eval_compare.html",
            principal=principal,
            page="evals",
            header=header,
            comparisons=comparisons,
            failure_rates={"baseline": base_fail, "candidate": cand_fail},
            rows=rows,
            plot=base64.b64encode(png).decode() if png else None,
        )


def eval_pages(dashboard: _Pages) -> list[BaseRoute]:
    """The ``/ui/evals`` routes."""
    pages = EvalPages(dashboard)
    return [
        Route("/ui/evals", dashboard.guarded("evals", pages.runs), methods=["GET"]),
        Route("/ui/evals/compare", dashboard.guarded("evals", pages.compare), methods=["GET"]),
        Route("/ui/evals/runs/{run}", dashboard.guarded("evals", pages.run), methods=["GET"]),
    ]
