"""``/ui/drift``: drift over time per alias, the latest check's verdict and moved features;
``/ui/drift/{alias}``: one alias's checks with the latest check's every test; ``?at=CHECKED_AT`` there is that
check's full report (``opsgate.drift.report.render_html``, a page of its own).

Read from the drift engine's history (``opsgate.drift.history.DriftHistory``, table ``drift_checks``) in a
worker thread. Charts read only the indexed columns of the checks in the window (a 15-minute interval is
~2,900 checks per alias a month), full results are read for the latest checks only. A tenant's key sees only
the checks whose tenant is its own (not the all-tenant ones); the operator sees every check, one series per
alias and tenant. Another tenant's check is "not found", as elsewhere in the dashboard.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from opsgate.domain.principal import Principal
from opsgate.drift.history import GLOBAL, DriftHistory
from opsgate.drift.report import ResultView, number, render_html, result_view
from opsgate.store.sql import SqlRecordStore

SINCE_CHOICES: dict[str, float] = {"24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0, "90d": 90 * 86400.0}
DEFAULT_SINCE = "30d"
MAX_POINTS = 10_000  # per chart: 90 days of checks every 15 minutes fit
CHECKS_SHOWN = 200  # full results read for one alias's table of checks
FIND_LIMIT = 2000  # a report's check is looked for among this many checks from its time on
REPORT_HISTORY = 30 * 86400.0  # the score plot of one report covers the month before its check
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}")  # the config's alias names
_TENANT = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
# The report page has no script and only inline images: a tighter policy than the dashboard's.
REPORT_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class _Pages(Protocol):
    source: Any

    def render(self, request: Request, template: str, status: int = 200, /, **context: Any) -> Response: ...

    def guarded(self, page: str, handler: Any) -> Any: ...


def alias_link(alias: str, tenant: str | None, **params: Any) -> str:
    """The dashboard URL of one alias's (and tenant's) drift page."""
    query = {k: v for k, v in {"tenant": tenant, **params}.items() if v is not None}
    return f"/ui/drift/{quote(alias, safe='')}" + (f"?{urlencode(query)}" if query else "")


@dataclass(frozen=True)
class ScorePoint:
    """One check on a chart: its time, its score (None when it had too little data) and its decision."""

    checked_at: float
    score: float | None
    drifted: bool

    def as_result(self, alias: str, tenant: str | None) -> dict[str, Any]:
        """The fields of a result the report's score plot reads."""
        return {"alias": alias, "tenant": tenant, "checked_at": self.checked_at, "score": self.score,
                "drifted": self.drifted, "insufficient": "yes" if self.score is None else None}  # fmt: skip


def score_points(store: SqlRecordStore, alias: str, tenant: str | None, since: float, until: float) -> list[ScorePoint]:
    """The checks of one series in [since, until], oldest first, from the indexed columns of ``drift_checks``
    (the full results stay unread: a month of checks is thousands of them)."""
    with store.connection() as conn:
        rows = store.execute(
            conn,
            "SELECT checked_at, score, drifted, insufficient FROM drift_checks "
            "WHERE alias = ? AND tenant = ? AND checked_at >= ? AND checked_at <= ? "
            "ORDER BY checked_at DESC, id DESC LIMIT ?",
            [alias, tenant or GLOBAL, since, until, MAX_POINTS],
        ).fetchall()
    return [
        ScorePoint(float(at), None if insufficient else number(score), bool(drifted) and not insufficient)
        for at, score, drifted, insufficient in reversed(rows)
    ]


@dataclass(frozen=True)
class DriftSeries:
    """One alias's (and tenant's) checks in the window: the chart's points and the latest check."""

    alias: str
    tenant: str | None
    latest: ResultView
    latest_at: float | None
    points: list[ScorePoint]  # oldest first
    chart_id: str

    @property
    def chart(self) -> dict[str, Any]:
        """What drift.js draws: scores over time, and the checks that decided "drift" as red points."""
        # Whole seconds and 4 digits: a month of 15-minute checks of ten aliases is ~29k points in the page.
        scores = [None if p.score is None else round(p.score, 4) for p in self.points]
        return {
            "id": self.chart_id,
            "x": [round(p.checked_at) for p in self.points],
            "score": scores,
            "drifted": [s if p.drifted else None for p, s in zip(self.points, scores, strict=True)],
        }

    @property
    def checks(self) -> int:
        return len(self.points)

    @property
    def drifted_checks(self) -> int:
        return sum(1 for p in self.points if p.drifted)

    @property
    def linkable(self) -> bool:
        """Whether the alias is a name the alias page accepts (a stored result could hold anything)."""
        tenant_ok = self.tenant is None or _TENANT.fullmatch(self.tenant) is not None
        return tenant_ok and _ALIAS.fullmatch(self.alias) is not None

    @property
    def link(self) -> str:
        return alias_link(self.alias, self.tenant) if self.linkable else ""

    @property
    def report_link(self) -> str:
        if not self.linkable or self.latest_at is None:
            return ""
        return alias_link(self.alias, self.tenant, at=repr(self.latest_at))


class _AllTenants:
    """Every tenant's checks (the operator's overview)."""


ALL_TENANTS = _AllTenants()
TenantFilter = str | None | _AllTenants


def _visible(rows: list[dict[str, Any]], alias: str | None, tenant: TenantFilter) -> list[dict[str, Any]]:
    """Rows of ``alias`` (None: any) and exactly ``tenant``, whatever the history's own filter did: this is
    the tenant boundary. A check over every tenant may say tenant None or "" (the column's value for it)."""
    return [
        r
        for r in rows
        if isinstance(r, Mapping)
        and isinstance(r.get("alias"), str)
        and (alias is None or r["alias"] == alias)
        and (tenant is ALL_TENANTS or (r.get("tenant") or None) == tenant)
    ]


def _history_scope(tenant: TenantFilter) -> str | None:
    # DriftHistory's own filter: None is every check, GLOBAL only the checks over all tenants of an alias.
    return None if isinstance(tenant, _AllTenants) else GLOBAL if tenant is None else tenant


def read_overview(store: SqlRecordStore, tenant: TenantFilter, since: float, now: float) -> list[DriftSeries]:
    """One series per (alias, tenant) with a check since ``since``; drifting ones first, then by name."""
    history = DriftHistory(store)
    # latest() names the series (its newest row by id); each one's newest check is read by time below.
    scopes = {
        (r["alias"], r.get("tenant") or None) for r in _visible(history.latest(_history_scope(tenant)), None, tenant)
    }
    series = []
    for index, (alias, scope) in enumerate(sorted(scopes, key=lambda k: (k[0], k[1] or ""))):
        newest = _visible(history.list(alias=alias, tenant=_history_scope(scope), since=since, limit=1), alias, scope)
        if not newest:
            continue  # nothing in the window
        points = score_points(store, alias, scope, since, now)
        at = number(newest[0].get("checked_at"))
        series.append(DriftSeries(alias, scope, result_view(newest[0]), at, points, f"drift-chart-{index}"))
    return sorted(series, key=lambda s: s.latest.state != "drift")  # stable: by name within each group


def read_alias(
    store: SqlRecordStore, alias: str, tenant: str | None, since: float, now: float
) -> tuple[DriftSeries | None, list[dict[str, Any]]]:
    """One series and its newest checks (full results, newest first); (None, []) without a check."""
    checks = _visible(
        DriftHistory(store).list(alias=alias, tenant=_history_scope(tenant), since=since, limit=CHECKS_SHOWN),
        alias,
        tenant,
    )
    if not checks:
        return None, []
    points = score_points(store, alias, tenant, since, now)
    latest = checks[0]
    return DriftSeries(
        alias, tenant, result_view(latest), number(latest.get("checked_at")), points, "drift-chart-0"
    ), checks


def read_report(
    store: SqlRecordStore, alias: str, tenant: str | None, at: float
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The check at ``at`` (newest first from just before it: it comes last) and the month of checks before it."""
    rows = DriftHistory(store).list(alias=alias, tenant=_history_scope(tenant), since=at - 1.0, limit=FIND_LIMIT)
    found = [r for r in _visible(rows, alias, tenant) if _same_time(r.get("checked_at"), at)]
    if not found:
        return None, []
    history = [p.as_result(alias, tenant) for p in score_points(store, alias, tenant, at - REPORT_HISTORY, at)]
    return found[-1], history


def _same_time(value: Any, at: float) -> bool:
    ts = number(value)
    return ts is not None and abs(ts - at) < 1e-3  # links carry repr(float), which round-trips


class DriftPages:
    """The drift pages of the dashboard."""

    def __init__(self, dashboard: _Pages) -> None:
        self.dash = dashboard
        # A report takes 1-3 s of CPU (matplotlib): at most two at once, so a burst of report views
        # waits its turn instead of filling the worker threads every other page and route needs.
        self._rendering = asyncio.Semaphore(2)

    def _store(self) -> SqlRecordStore | None:
        record_log = self.dash.source.record_log
        return None if record_log is None else record_log.store

    def _message(self, request: Request, principal: Principal, title: str, message: str, status: int) -> Response:
        return self.dash.render(
            request, "message.html", status, principal=principal, page="drift", title=title, message=message
        )

    @staticmethod
    def _since(request: Request) -> str:
        since = request.query_params.get("since", DEFAULT_SINCE)
        return since if since in SINCE_CHOICES else DEFAULT_SINCE

    async def overview(self, request: Request, principal: Principal) -> Response:
        """``/ui/drift``: per alias, the score over time and the latest check's moved features."""
        store = self._store()
        if store is None:
            return self._message(request, principal, "Not available", "record.store is unset: no drift checks.", 501)
        since, now = self._since(request), time.time()
        tenant: TenantFilter = ALL_TENANTS if principal.is_operator else principal.tenant
        series = await run_in_threadpool(read_overview, store, tenant, now - SINCE_CHOICES[since], now)
        return self.dash.render(
            request,
            "drift.html",
            principal=principal,
            page="drift",
            since=since,
            since_choices=list(SINCE_CHOICES),
            series=series,
            charts=[s.chart for s in series],
        )

    async def alias(self, request: Request, principal: Principal) -> Response:
        """``/ui/drift/{alias}?tenant=&since=``: one series; ``&at=CHECKED_AT``: that check's full report."""
        store = self._store()
        alias = request.path_params["alias"]
        if store is None or not _ALIAS.fullmatch(alias):
            return self._message(request, principal, "Not found", "No drift checks for that alias.", 404)
        tenant = principal.tenant  # a tenant's key: its own series, whatever the URL says
        if principal.is_operator:
            wanted = request.query_params.get("tenant")
            if wanted is not None and not _TENANT.fullmatch(wanted):
                return self._message(request, principal, "Not found", "No such tenant.", 404)
            tenant = wanted or None
        if "at" in request.query_params:
            return await self._report(request, principal, store, alias, tenant)
        since, now = self._since(request), time.time()
        series, checks = await run_in_threadpool(read_alias, store, alias, tenant, now - SINCE_CHOICES[since], now)
        if series is None:
            who = f" (tenant {tenant})" if tenant else ""
            message = f"No drift checks for '{alias}'{who} in the last {since}."
            return self._message(request, principal, "Not found", message, 404)
        return self.dash.render(
            request,
            "drift_alias.html",
            principal=principal,
            page="drift",
            since=since,
            since_choices=list(SINCE_CHOICES),
            s=series,
            charts=[series.chart],
            checks=[(result_view(c), number(c.get("checked_at"))) for c in checks],
            alias_link=alias_link,
        )

    async def _report(
        self, request: Request, principal: Principal, store: SqlRecordStore, alias: str, tenant: str | None
    ) -> Response:
        at = number(request.query_params.get("at"))
        if at is None or abs(at) > 1e11:
            return self._message(request, principal, "Bad request", "at must be a check's time (epoch seconds).", 400)
        found, history = await run_in_threadpool(read_report, store, alias, tenant, at)
        if found is None:
            return self._message(request, principal, "Not found", f"No drift check of '{alias}' at {at!r}.", 404)
        async with self._rendering:
            html = await run_in_threadpool(render_html, found, history)
        return HTMLResponse(html, headers=REPORT_HEADERS)


def drift_pages(dashboard: Any) -> list[BaseRoute]:
    """The ``/ui/drift`` routes."""
    pages = DriftPages(dashboard)
    return [
        Route("/ui/drift", dashboard.guarded("drift", pages.overview), methods=["GET"]),
        Route("/ui/drift/{alias:path}", dashboard.guarded("drift", pages.alias), methods=["GET"]),
    ]
