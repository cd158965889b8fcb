"""``/ui/drift``: drift over time per alias, the latest check's verdict and moved features;
``/ui/drift/{alias}``: one alias's checks with the latest check's every test; ``?at=CHECKED_AT`` there is that
check's full report (``opsgate.drift.report.render_html``, a page of its own).

Read from the drift engine's history (``opsgate.drift.history.DriftHistory``) in a worker thread. A tenant's
key sees only the checks whose ``tenant`` is its own (not the gateway-wide ones); the operator sees every
check, one series per alias and tenant. Another tenant's check is "not found", as elsewhere in the dashboard.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
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

SINCE_CHOICES: dict[str, float] = {"24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0, "90d": 90 * 86400.0}
DEFAULT_SINCE = "30d"
LIST_LIMIT = 2000  # checks read per page; hourly checks of one alias for 30 days fit ~3 times over
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


class _AllTenants:
    """Every tenant's checks (the operator's overview)."""


ALL_TENANTS = _AllTenants()
TenantFilter = str | None | _AllTenants


class _Pages(Protocol):
    source: Any

    def render(self, request: Request, template: str, status: int = 200, /, **context: Any) -> Response: ...

    def guarded(self, page: str, handler: Any) -> Any: ...


class HistoryReader(Protocol):
    """What the pages need of ``DriftHistory``: stored results, newest first."""

    def list(
        self, alias: str | None = None, tenant: str | None = None, since: float | None = None, limit: int = 500
    ) -> list[dict[str, Any]]: ...


def default_history(store: Any) -> HistoryReader:
    """The drift engine's history over ``store``."""
    return DriftHistory(store)


def alias_link(alias: str, tenant: str | None, **params: Any) -> str:
    """The dashboard URL of one alias's (and tenant's) drift page."""
    query = {k: v for k, v in {"tenant": tenant, **params}.items() if v is not None}
    return f"/ui/drift/{quote(alias, safe='')}" + (f"?{urlencode(query)}" if query else "")


@dataclass(frozen=True)
class DriftSeries:
    """One alias's (and tenant's) checks in the window: the chart's points and the latest check."""

    alias: str
    tenant: str | None
    latest: ResultView
    latest_at: float | None
    checks: list[dict[str, Any]]  # newest first
    chart: dict[str, Any]

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

    @property
    def drifted_checks(self) -> int:
        return sum(1 for c in self.checks if c.get("drifted") is True and not c.get("insufficient"))


def _when(check: Mapping[str, Any]) -> float:
    """A check's time for ordering and plotting; 0 for a missing or impossible one (not drawn)."""
    ts = number(check.get("checked_at"))
    return ts if ts is not None and 0 < ts < 1e11 else 0.0


def series_of(rows: list[dict[str, Any]], chart_prefix: str = "drift-chart") -> list[DriftSeries]:
    """Group checks (newest first) into one series per (alias, tenant); drifting aliases first."""
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for row in rows:
        alias = row.get("alias")
        tenant = row.get("tenant") or None
        if isinstance(alias, str) and (tenant is None or isinstance(tenant, str)):
            groups.setdefault((alias, tenant), []).append(row)
    series: list[DriftSeries] = []
    for index, ((alias, tenant), checks) in enumerate(sorted(groups.items(), key=lambda g: (g[0][0], g[0][1] or ""))):
        checks.sort(key=_when, reverse=True)  # newest first, whatever order the store gave
        oldest_first = [c for c in reversed(checks) if _when(c) > 0]
        scores = [None if c.get("insufficient") else number(c.get("score")) for c in oldest_first]
        chart = {
            "id": f"{chart_prefix}-{index}",
            "x": [_when(c) for c in oldest_first],
            "score": scores,
            # The checks that decided "drift", drawn as red points on the score line.
            "drifted": [s if c.get("drifted") is True else None for c, s in zip(oldest_first, scores, strict=True)],
        }
        series.append(
            DriftSeries(alias, tenant, result_view(checks[0]), number(checks[0].get("checked_at")), checks, chart)
        )
    return sorted(series, key=lambda s: s.latest.state != "drift")  # stable: by alias within each group


class DriftPages:
    """The drift pages of the dashboard."""

    def __init__(self, dashboard: _Pages, history: Callable[[Any], HistoryReader] | None = None) -> None:
        self.dash = dashboard
        self.history = history

    def _reader(self) -> HistoryReader | None:
        record_log = self.dash.source.record_log
        if record_log is None:
            return None
        return (self.history or default_history)(record_log.store)

    def _message(self, request: Request, principal: Principal, title: str, message: str, status: int) -> Response:
        return self.dash.render(
            request, "message.html", status, principal=principal, page="drift", title=title, message=message
        )

    @staticmethod
    def _since(request: Request) -> str:
        since = request.query_params.get("since", DEFAULT_SINCE)
        return since if since in SINCE_CHOICES else DEFAULT_SINCE

    @staticmethod
    def _read(reader: HistoryReader, alias: str | None, tenant: TenantFilter, since: float) -> list[dict[str, Any]]:
        """Checks newest first, of ``alias`` (None: all) and exactly ``tenant`` (None: the gateway-wide checks).
        Filtered here too, whatever the reader's own filter does: this is the tenant boundary."""
        # The history's own filter: None is every check, GLOBAL only the checks over all tenants of an alias.
        scope = None if isinstance(tenant, _AllTenants) else GLOBAL if tenant is None else tenant
        rows = reader.list(alias=alias, tenant=scope, since=since, limit=LIST_LIMIT)
        return [
            dict(r)
            for r in rows
            if isinstance(r, Mapping)
            and (tenant is ALL_TENANTS or (r.get("tenant") or None) == tenant)  # "" is the all-tenant check too
            and (alias is None or r.get("alias") == alias)
        ]

    async def overview(self, request: Request, principal: Principal) -> Response:
        """``/ui/drift``: per alias, the score over time and the latest check's moved features."""
        reader = self._reader()
        if reader is None:
            return self._message(request, principal, "Not available", "record.store is unset: no drift checks.", 501)
        since = self._since(request)
        tenant: TenantFilter = ALL_TENANTS if principal.is_operator else principal.tenant
        rows = await run_in_threadpool(self._read, reader, None, tenant, time.time() - SINCE_CHOICES[since])
        series = series_of(rows)
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
        reader = self._reader()
        alias = request.path_params["alias"]
        if reader is None or not _ALIAS.fullmatch(alias):
            return self._message(request, principal, "Not found", "No drift checks for that alias.", 404)
        tenant = principal.tenant
        if principal.is_operator:
            wanted = request.query_params.get("tenant")
            if wanted is not None and not _TENANT.fullmatch(wanted):
                return self._message(request, principal, "Not found", "No such tenant.", 404)
            tenant = wanted or None
        if "at" in request.query_params:
            return await self._report(request, principal, reader, alias, tenant)
        since = self._since(request)
        rows = await run_in_threadpool(self._read, reader, alias, tenant, time.time() - SINCE_CHOICES[since])
        if not rows:
            who = f" (tenant {tenant})" if tenant else ""
            message = f"No drift checks for '{alias}'{who} in the last {since}."
            return self._message(request, principal, "Not found", message, 404)
        [series] = series_of(rows)
        return self.dash.render(
            request,
            "drift_alias.html",
            principal=principal,
            page="drift",
            since=since,
            since_choices=list(SINCE_CHOICES),
            s=series,
            charts=[series.chart],
            checks=[(c, result_view(c), number(c.get("checked_at"))) for c in series.checks],
            alias_link=alias_link,
        )

    def _check_and_history(
        self, reader: HistoryReader, alias: str, tenant: str | None, at: float
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The check at ``at`` (read from just before it: newest first, it comes last) and the month before it."""
        found = [r for r in self._read(reader, alias, tenant, at - 1.0) if _same_time(r.get("checked_at"), at)]
        history = [r for r in self._read(reader, alias, tenant, at - REPORT_HISTORY) if _when(r) <= at]
        return (found[-1] if found else None), history

    async def _report(
        self, request: Request, principal: Principal, reader: HistoryReader, alias: str, tenant: str | None
    ) -> Response:
        at = number(request.query_params.get("at"))
        if at is None or abs(at) > 1e11:
            return self._message(request, principal, "Bad request", "at must be a check's time (epoch seconds).", 400)
        found, history = await run_in_threadpool(self._check_and_history, reader, alias, tenant, at)
        if found is None:
            return self._message(request, principal, "Not found", f"No drift check of '{alias}' at {at!r}.", 404)
        html = await run_in_threadpool(render_html, found, history)
        return HTMLResponse(html, headers=REPORT_HEADERS)


def _same_time(value: Any, at: float) -> bool:
    ts = number(value)
    return ts is not None and abs(ts - at) < 1e-3  # links carry repr(float), which round-trips


def drift_pages(dashboard: Any, history: Callable[[Any], HistoryReader] | None = None) -> list[BaseRoute]:
    """The ``/ui/drift`` routes (``history`` builds the reader over the record store; tests may swap it)."""
    pages = DriftPages(dashboard, history)
    return [
        Route("/ui/drift", dashboard.guarded("drift", pages.overview), methods=["GET"]),
        Route("/ui/drift/{alias:path}", dashboard.guarded("drift", pages.alias), methods=["GET"]),
    ]


__all__ = ["DriftPages", "DriftSeries", "HistoryReader", "alias_link", "drift_pages", "series_of"]
