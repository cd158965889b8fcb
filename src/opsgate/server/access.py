"""Access control for every route that is not an inference call: ``/admin``, ``/ui``, ``/metrics``, ``/v1/models``…

A pure ASGI middleware rather than a check in each handler, so a route added later is protected by
default (see ``auth.permissions.admin_permission``). Inference routes are authenticated by the
pipeline's auth stage instead, so that refused calls are recorded like any other request.
The caller lands in ``request.state.principal`` for handlers to scope their data by tenant. A key
comes in a header; the dashboard's cookie carries a server-side session id (``auth/ui_sessions.py``).
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from opsgate.auth.authenticator import Authenticator, presented_key
from opsgate.auth.permissions import admin_permission, allows
from opsgate.auth.session_cookie import drop_session_cookie, read_session_cookie
from opsgate.domain.errors import GatewayError, PermissionDeniedError
from opsgate.domain.principal import ANONYMOUS_OPERATOR, Principal
from opsgate.limits.errors import RateLimitError
from opsgate.server.http_io import error_response
from opsgate.server.protocol_rejects import record_unhandled

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/ui/login", "/ui/logout"})
PUBLIC_PREFIXES = ("/ui/static/",)
# Public, but a caller who presents a key with the ``read`` permission sees the details.
OPTIONAL_KEY_PATHS = frozenset({"/readyz"})
# Authenticated (and recorded) by the pipeline's auth stage.
PIPELINE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The login and logout forms change the session, so they are checked like cookie requests (login CSRF).
_SESSION_FORMS = frozenset({"/ui/login", "/ui/logout"})


class AccessMiddleware:
    """Authenticates the caller and checks the route's permission; sets ``scope['state']['principal']``.

    CSRF: a state-changing request authenticated by the dashboard cookie (not a header key) must come
    from this gateway's own pages: its ``Origin`` (else ``Referer``) names the request's own host, and
    a JSON API call says ``Content-Type: application/json`` (which a foreign page cannot send without
    a CORS preflight this gateway never grants). SameSite=Strict alone still lets sibling subdomains
    and some browsers through.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public = set(PUBLIC_PATHS)
        if authenticator.config.public_metrics:
            self.public.add("/metrics")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        path: str = scope["path"]
        headers = Headers(scope=scope)
        changes_state = scope["method"] not in SAFE_METHODS
        if not self.authenticator.enabled:
            state["principal"] = ANONYMOUS_OPERATOR
            # No key to steal, but a foreign page must not drive the admin API through a local browser.
            if changes_state and path not in PIPELINE_PATHS and not same_origin(headers, required=False):
                await error_response(_cross_site("Origin"))(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if path in PIPELINE_PATHS:
            await self.app(scope, receive, send)
            return
        header_key = presented_key(headers)
        # The dashboard's session cookie, only when no key is in a header (a header key wins).
        # Read by name for this request (__Host- when Secure); sent twice, it is no session at all.
        request = Request(scope)
        mode = self.authenticator.config.ui_session.cookie_secure
        cookie = read_session_cookie(request, mode) if header_key is None else None
        if changes_state and header_key is None and (cookie is not None or path in _SESSION_FORMS):
            refusal = csrf_refusal(headers, json_api=not path.startswith("/ui"))
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        if path in self.public or path.startswith(PUBLIC_PREFIXES):
            if path in OPTIONAL_KEY_PATHS and (header_key is not None or cookie is not None):
                await self._optional_key(header_key, cookie, state)
            await self.app(scope, receive, send)
            return
        if header_key is None and not cookie and path.startswith("/ui"):
            # A browser without its cookie: to the login page, not a JSON error.
            await _to_login(request, mode, cookie is not None)(scope, receive, send)
            return
        try:
            principal = await self._caller(header_key, cookie)
            permission = admin_permission(scope["method"], path)
            if not allows(principal, permission):
                raise PermissionDeniedError(
                    f"The role '{principal.role}' does not have the '{permission}' permission this route needs.",
                    code="role_not_allowed",
                )
        except GatewayError as error:
            if path.startswith("/ui") and error.status == 401:
                # A stale session (logged out, expired, its key revoked) or a garbled cookie: log in again.
                await _to_login(request, mode, True)(scope, receive, send)
                return
            quoted: dict[str, str] = {}
            if path.startswith("/v1/"):
                # The API clients call (/v1/models, a route we lack): a refused call is recorded as one.
                record_id = record_unhandled(request, error, "access_refused")
                if record_id is not None:
                    quoted["x-request-id"] = record_id
            await error_response(error, quoted)(scope, receive, send)
            return
        throttled = self.authenticator.admin_throttle.enabled and path.startswith(("/admin", "/ui"))
        if throttled and principal.tenant is not None:
            # One tenant's script looping on admin routes must not take the store and threads from the others.
            wait = self.authenticator.admin_throttle.retry_after(principal.tenant, write=changes_state)
            if wait is not None:
                await error_response(_too_fast(wait, changes_state))(scope, receive, send)
                return
        state["principal"] = principal
        await self.app(scope, receive, send)

    async def _caller(self, header_key: str | None, cookie: str | None) -> Principal:
        if header_key is not None or cookie is None:
            return await self.authenticator.authenticate(header_key)
        return await self.authenticator.authenticate_session(cookie)

    async def _optional_key(self, header_key: str | None, cookie: str | None, state: dict[str, object]) -> None:
        # A bad key on a public route is ignored: the caller gets the public answer, not a 401.
        try:
            principal = await self._caller(header_key, cookie)
        except GatewayError:
            return
        if allows(principal, "read"):
            state["principal"] = principal


def _too_fast(wait: float, write: bool) -> RateLimitError:
    kind = "writes" if write else "reads"
    return RateLimitError(
        f"Too many admin {kind} for this tenant (auth.tenant_admin_rate); retry in {max(1, math.ceil(wait))} s.",
        code="admin_rate_limited",
        retry_after=wait,
        headers={},
    )


def _to_login(request: Request, mode: str, drop_cookie: bool) -> RedirectResponse:
    redirect = RedirectResponse("/ui/login", status_code=303)
    if drop_cookie:
        drop_session_cookie(redirect, request, mode)
    return redirect


def csrf_refusal(headers: Headers, *, json_api: bool) -> PermissionDeniedError | None:
    """Why a cookie-authenticated state change is refused as possibly cross-site, or None if it is not."""
    if not same_origin(headers, required=True):
        return _cross_site("Origin (or Referer) naming this gateway")
    if json_api:
        media = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return _cross_site("Content-Type: application/json")
    return None


def _cross_site(needs: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"Refused as a possible cross-site request: a state-changing dashboard request (the cookie session, "
        f"the login form) needs {needs}. API clients send their key in the Authorization header instead.",
        code="cross_site_request",
    )


def same_origin(headers: Headers, *, required: bool) -> bool:
    """Whether ``Origin`` (else ``Referer``) names the host the request was sent to.

    Without either header the answer is ``not required``. ``Origin: null`` (sandboxed frames,
    privacy redirects) is never ours. Ports compare after filling in the scheme's default, so
    ``https://gw.example`` matches ``Host: gw.example`` behind a TLS-terminating proxy.
    """
    source = headers.get("origin") or headers.get("referer")
    if source is None:
        return not required
    host = headers.get("host")
    try:
        origin = urlsplit(source)
        own = urlsplit("//" + (host or ""))
        if origin.scheme not in ("http", "https") or not origin.hostname or not own.hostname:
            return False
        default = 443 if origin.scheme == "https" else 80
        return (origin.hostname, origin.port or default) == (own.hostname, own.port or default)
    except ValueError:  # a malformed port
        return False


def principal_of(request: Request) -> Principal:
    """The caller of an admin route (the anonymous operator when auth is off)."""
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else ANONYMOUS_OPERATOR


def require_operator(request: Request, what: str) -> Principal:
    """The caller, who must be an operator (a key that spans tenants) for ``what``."""
    principal = principal_of(request)
    if not principal.is_operator:
        raise PermissionDeniedError(f"Only an operator key (not bound to a tenant) can {what}.", code="operator_only")
    return principal


def scoped_tenant(request: Request, asked: str | None) -> str | None:
    """The tenant filter a query must use: the caller's own tenant unless it is an operator."""
    principal = principal_of(request)
    if principal.is_operator:
        return asked
    if asked is not None and asked != principal.tenant:
        raise PermissionDeniedError(f"This API key cannot read tenant '{asked}'.", param="tenant", code="tenant_denied")
    return principal.tenant


def actor_of(request: Request) -> str:
    """How the audit log names the caller."""
    principal = principal_of(request)
    return principal.key_id or principal.name
