"""The ``/ui`` dashboard: server-rendered Jinja2 pages, with charts drawn in the browser by uPlot.

Pages that show records (the request log, a request, guard events) are rendered here from the same
store calls as the admin API, filtered to the caller's tenant. Pages whose data belongs to other
parts of the gateway (SLOs, alerts, error groups, feedback, time series) are shells whose script
fetches the admin JSON API with the same credentials, and says "not available" where a route is
missing, so the dashboard degrades instead of breaking.

Who is calling: ``server/access.py`` leaves the caller at ``request.state.principal`` (from
``Authorization: Bearer`` or the session cookie the login page sets, ``__Host-opsgate_session`` when
Secure, else ``opsgate_session``: an opaque session id, never the key; see ``auth/ui_sessions.py``
and ``auth/session_cookie.py``) and sends a browser without one to ``/ui/login``. With
auth off every caller is the anonymous operator and no session is made.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from opsgate import __version__
from opsgate.auth.authenticator import Authenticator
from opsgate.auth.session_cookie import cookie_name, cookie_secure, drop_session_cookie, read_session_cookie
from opsgate.auth.ui_sessions import LEGACY_COOKIE_NAME
from opsgate.domain.config import GatewayConfig
from opsgate.domain.errors import GatewayError
from opsgate.domain.principal import ANONYMOUS_OPERATOR, Principal
from opsgate.server.http_io import FORM_MAX_BODY_BYTES, read_body, require_media_type
from opsgate.store.crypto import KeyError_
from opsgate.store.query import RecordQuery, decode_cursor, parse_time, query_from_params, require_text
from opsgate.store.record_log import RecordLog
from opsgate.ui import views
from opsgate.ui.drift_pages import drift_pages
from opsgate.ui.eval_pages import eval_pages
from opsgate.ui.release_pages import release_pages

HERE = Path(__file__).parent
log = logging.getLogger("opsgate.auth")  # failed logins go where other auth events do
# Roles that may look at the dashboard; a service key calls /v1 only.
UI_ROLES = frozenset({"admin", "developer", "viewer"})
# Scripts only from our own origin (no inline script); uPlot sizes elements through inline styles.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV = (
    ("overview", "/ui", "Overview"),
    ("slo", "/ui/slo", "SLOs"),
    ("requests", "/ui/requests", "Requests"),
    ("errors", "/ui/errors", "Errors"),
    ("feedback", "/ui/feedback", "Feedback"),
    ("guard", "/ui/guard", "Guard"),
    ("evals", "/ui/evals", "Evals"),
    ("releases", "/ui/releases", "Releases"),
    ("drift", "/ui/drift", "Drift"),
)


class DashboardSource(Protocol):
    """What the dashboard needs from the gateway: config, request log (if any) and key checks."""

    config: GatewayConfig
    record_log: RecordLog | None
    authenticator: Authenticator


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = views.fmt_time
    env.filters["ago"] = views.fmt_ago
    env.filters["cost"] = views.fmt_cost
    env.globals["nav"] = NAV
    env.globals["version"] = __version__
    return env


def _drop_legacy_cookie(response: Response) -> None:
    # Before server-side sessions the cookie held the API key itself: take it out of the browser.
    response.delete_cookie(LEGACY_COOKIE_NAME, path="/", httponly=True, samesite="strict")


def _safe_next(target: str | None) -> str:
    # Only paths of the dashboard itself, so the login form cannot redirect elsewhere.
    if target and target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui"


class Dashboard:
    """The dashboard's handlers over one gateway."""

    def __init__(self, source: DashboardSource) -> None:
        self.source = source
        self.env = _environment()

    # -- plumbing ---------------------------------------------------------------------------------

    def principal(self, request: Request) -> Principal | None:
        """The caller, or None when auth is on and nobody has logged in."""
        principal = getattr(request.state, "principal", None)
        if isinstance(principal, Principal):
            return principal
        # Fail closed: with auth on, a request the access layer did not vouch for must log in.
        return None if self.source.config.auth.enabled else ANONYMOUS_OPERATOR

    def render(self, request: Request, template: str, status: int = 200, /, **context: Any) -> HTMLResponse:
        """A page, with the caller and security headers."""
        principal = context.pop("principal", None) or getattr(request.state, "principal", None)
        html = self.env.get_template(template).render(
            request=request,
            principal=principal,
            auth_on=self.source.config.auth.enabled,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)

    def guarded(self, page: str, handler: Any) -> Any:
        """Wrap a page handler: log in first when needed, refuse roles without dashboard access."""

        async def endpoint(request: Request) -> Response:
            principal = self.principal(request)
            if principal is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/ui/login?" + urlencode({"next": target}), status_code=303)
            if principal.role not in UI_ROLES:
                return self.render(
                    request,
                    "message.html",
                    403,
                    principal=principal,
                    page=page,
                    title="Not allowed",
                    message=f"The role '{principal.role}' cannot use the dashboard.",
                )
            response: Response = await handler(request, principal)
            return response

        return endpoint

    # -- login ------------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        """``GET /ui/login``: the API key form."""
        return self.render(
            request,
            "login.html",
            page="login",
            next=_safe_next(request.query_params.get("next")),
            error=request.query_params.get("error"),
        )

    async def login(self, request: Request) -> Response:
        """``POST /ui/login``: check the key, start a server-side session, set its id as the cookie, go on."""
        require_media_type(request, ("application/x-www-form-urlencoded",), required=True)
        body = await read_body(request, FORM_MAX_BODY_BYTES)
        form = parse_qs(body.decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0].strip()
        target = _safe_next((form.get("next") or [""])[0])
        if not key:
            return self.render(request, "login.html", 400, page="login", next=target, error="Enter an API key.")
        response = RedirectResponse(target, status_code=303)
        _drop_legacy_cookie(response)
        if not self.source.config.auth.enabled:
            return response  # everyone is the operator: nothing to remember
        secure = cookie_secure(request, self.source.config.auth.ui_session.cookie_secure)
        if secure is None:
            message = (
                "This gateway is reached over plain http, so the browser would not send back a Secure session "
                "cookie. Use https, or set auth.ui_session.cookie_secure (see the docs)."
            )
            return self.render(request, "login.html", 400, page="login", next=target, error=message)
        # Check the key now, so a typo is said on the form rather than as a JSON 401 on every page.
        authenticator = self.source.authenticator
        client = request.client.host if request.client else "unknown"
        wait = authenticator.login_throttle.retry_after(client)
        if wait is not None:  # too many wrong keys from this address: not even checked (guessing)
            seconds = max(1, math.ceil(wait))
            message = f"Too many failed logins from this address; try again in {seconds} s."
            page = self.render(request, "login.html", 429, page="login", next=target, error=message)
            page.headers["Retry-After"] = str(seconds)
            return page  # counted in /readyz; not logged each time (a flood would flood the log)
        try:
            principal = await authenticator.authenticate(key)
        except GatewayError as error:
            if error.status == 401:  # the key is wrong, not the request: count it, never log the key
                throttle = authenticator.login_throttle
                failures = throttle.failed(client)  # at most max_failures lines per address and window
                log.warning("dashboard login failed from %s (%s, %d in window)", client, error.code, failures)
                if failures == throttle.max_failures:
                    log.warning("dashboard logins from %s refused for %.0f s", client, throttle.window)
            return self.render(request, "login.html", error.status, page="login", next=target, error=error.message)
        if principal.role not in UI_ROLES:
            message = f"The role '{principal.role}' cannot use the dashboard."
            return self.render(request, "login.html", 403, page="login", next=target, error=message)
        session_id = await authenticator.start_session(principal)
        # Path=/ and not /ui: the dashboard's pages fetch /admin JSON with this cookie.
        # __Host- when Secure: a sibling subdomain cannot set a cookie of that name (auth/session_cookie.py).
        name = cookie_name(secure)
        response.set_cookie(name, session_id, httponly=True, samesite="strict", secure=secure, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        """``POST /ui/logout``: end the session on the server (a copy of the cookie stops working) and drop it."""
        mode = self.source.config.auth.ui_session.cookie_secure
        await self.source.authenticator.sessions.end(read_session_cookie(request, mode))
        response = RedirectResponse("/ui/login", status_code=303)
        drop_session_cookie(response, request, mode)
        _drop_legacy_cookie(response)
        return response

    # -- pages ------------------------------------------------------------------------------------

    async def overview(self, request: Request, principal: Principal) -> Response:
        """``/ui``: traffic, latency, errors, cost and tokens over time (live)."""
        return self.render(request, "overview.html", principal=principal, page="overview")

    async def slo(self, request: Request, principal: Principal) -> Response:
        """``/ui/slo``: SLO board with error-budget burn charts and alerts."""
        return self.render(request, "slo.html", principal=principal, page="slo")

    async def errors(self, request: Request, principal: Principal) -> Response:
        """``/ui/errors``: error groups with counts and trends."""
        return self.render(request, "errors.html", principal=principal, page="errors")

    async def feedback(self, request: Request, principal: Principal) -> Response:
        """``/ui/feedback``: CSAT and NPS by day, model and tenant."""
        return self.render(request, "feedback.html", principal=principal, page="feedback")

    async def requests(self, request: Request, principal: Principal) -> Response:
        """``/ui/requests``: the request log with full-text search and filters, newest first."""
        filters = {k: request.query_params.get(k, "").strip() for k in views.SEARCH_FILTERS}
        context: dict[str, Any] = {
            "principal": principal,
            "page": "requests",
            "filters": filters,
            "since_choices": views.SINCE_CHOICES,
            "rows": [],
            "next_cursor": None,
            "error": None,
        }
        record_log = self.source.record_log
        if record_log is None:
            context["error"] = "The request log is not configured (record.store is unset)."
            return self.render(request, "requests.html", **context)
        params: dict[str, Any] = {k: v for k, v in filters.items() if v}
        if request.query_params.get("cursor"):
            params["cursor"] = request.query_params["cursor"]
        params["limit"] = "50"
        try:
            query = views.scope_query(query_from_params(params), principal)
            rows, cursor = await run_in_threadpool(record_log.search, query)
        except GatewayError as error:
            context["error"] = error.message
            return self.render(request, "requests.html", min(error.status, 503), **context)
        more = {k: v for k, v in filters.items() if v}
        context.update(
            rows=rows,
            next_cursor=cursor,
            next_link=("/ui/requests?" + urlencode({**more, "cursor": cursor})) if cursor else None,
        )
        return self.render(request, "requests.html", **context)

    async def request_detail(self, request: Request, principal: Principal) -> Response:
        """``/ui/requests/{id}``: messages, output, usage, guard verdicts and trace id of one request."""
        record_id = request.path_params["id"]
        record_log = self.source.record_log
        common = {"principal": principal, "page": "requests"}
        if record_log is None:
            return self.render(
                request, "message.html", 501, title="No request log", message="record.store is unset.", **common
            )
        try:
            record = await run_in_threadpool(record_log.get, record_id)
        except KeyError_ as error:
            return self.render(request, "message.html", 500, title="Payloads unreadable", message=str(error), **common)
        if record is None or not principal.can_read_tenant(record.get("tenant")):
            # Another tenant's record is "not found", not "forbidden": its existence is not for this caller.
            return self.render(
                request,
                "message.html",
                404,
                title="Not found",
                message=f"No request record with id '{record_id}'.",
                **common,
            )
        return self.render(request, "request_detail.html", detail=views.request_detail(record), **common)

    async def guard(self, request: Request, principal: Principal) -> Response:
        """``/ui/guard``: guard events (blocks, redactions, warnings) by scanner and over time, paged."""
        since_text = request.query_params.get("since") or "24h"
        if since_text not in views.SINCE_CHOICES:
            since_text = "24h"
        context: dict[str, Any] = {
            "principal": principal,
            "page": "guard",
            "since": since_text,
            "since_choices": views.SINCE_CHOICES,
            "summary": None,
            "events": None,
            "error": None,
        }
        record_log = self.source.record_log
        if record_log is None:
            context["error"] = "The request log is not configured (record.store is unset)."
            return self.render(request, "guard.html", **context)
        now = time.time()
        since = parse_time(since_text, "since", now)
        query = views.scope_query(RecordQuery(since=since, limit=1000), principal)
        page_query = views.scope_query(RecordQuery(since=since), principal)
        try:
            cursor = request.query_params.get("cursor")
            if cursor:
                require_text(cursor, "cursor")
                page_query.cursor = decode_cursor(cursor)
            rows, _ = await run_in_threadpool(record_log.search, query)
            events = await run_in_threadpool(views.guard_event_page, record_log.search, page_query)
        except GatewayError as error:
            context["error"] = error.message
            return self.render(request, "guard.html", min(error.status, 503), **context)
        summary = views.guard_summary(rows, since, now)
        chart = {
            "timeline": [[ts for ts, _ in summary.timeline], [n for _, n in summary.timeline]],
            "scanners": summary.by_scanner[:12],
        }
        older = (
            "/ui/guard?" + urlencode({"since": since_text, "cursor": events.next_cursor})
            if events.next_cursor
            else None
        )
        newest = "/ui/guard?" + urlencode({"since": since_text}) if cursor else None
        context.update(summary=summary, chart=chart, events=events.events, older_link=older, newest_link=newest)
        return self.render(request, "guard.html", **context)


def ui_routes(source: DashboardSource) -> list[BaseRoute]:
    """The ``/ui`` routes and its static files, over ``source``'s config and request log."""
    dash = Dashboard(source)
    return [
        Route("/ui", dash.guarded("overview", dash.overview), methods=["GET"]),
        Route("/ui/", dash.guarded("overview", dash.overview), methods=["GET"]),
        Route("/ui/login", dash.login_form, methods=["GET"]),
        Route("/ui/login", dash.login, methods=["POST"]),
        Route("/ui/logout", dash.logout, methods=["POST"]),
        Route("/ui/slo", dash.guarded("slo", dash.slo), methods=["GET"]),
        Route("/ui/requests", dash.guarded("requests", dash.requests), methods=["GET"]),
        Route("/ui/requests/{id}", dash.guarded("requests", dash.request_detail), methods=["GET"]),
        Route("/ui/errors", dash.guarded("errors", dash.errors), methods=["GET"]),
        Route("/ui/feedback", dash.guarded("feedback", dash.feedback), methods=["GET"]),
        Route("/ui/guard", dash.guarded("guard", dash.guard), methods=["GET"]),
        *eval_pages(dash),  # /ui/evals: runs, a run's items, a comparison (ui/eval_pages.py)
        *release_pages(dash),  # /ui/releases, /ui/prompts/{name}, /ui/experiments/{id} (ui/release_pages.py)
        *drift_pages(dash),  # /ui/drift: drift over time per alias (ui/drift_pages.py)
        Mount("/ui/static", app=StaticFiles(directory=HERE / "static"), name="ui-static"),
    ]
