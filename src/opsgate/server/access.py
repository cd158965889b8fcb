"""Access control for every route that is not an inference call: ``/admin``, ``/ui``, ``/metrics``, ``/v1/models``…

A pure ASGI middleware rather than a check in each handler, so a route added later is protected by
default (see ``auth.permissions.admin_permission``). Inference routes are authenticated by the
pipeline's auth stage instead, so that refused calls are recorded like any other request.
The caller lands in ``request.state.principal`` for handlers to scope their data by tenant.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from opsgate.auth.authenticator import Authenticator, presented_key
from opsgate.auth.permissions import admin_permission, allows
from opsgate.domain.errors import GatewayError, PermissionDeniedError
from opsgate.domain.principal import ANONYMOUS_OPERATOR, Principal
from opsgate.server.http_io import error_response

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/ui/login", "/ui/logout"})
PUBLIC_PREFIXES = ("/ui/static/",)
# Authenticated (and recorded) by the pipeline's auth stage.
PIPELINE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


class AccessMiddleware:
    """Authenticates the caller and checks the route's permission; sets ``scope['state']['principal']``."""

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
        if not self.authenticator.enabled:
            state["principal"] = ANONYMOUS_OPERATOR
            await self.app(scope, receive, send)
            return
        if path in PIPELINE_PATHS or path in self.public or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        secret = presented_key(Headers(scope=scope), request.cookies)
        if secret is None and path.startswith("/ui"):
            # A browser without its cookie: to the login page, not a JSON error.
            await RedirectResponse("/ui/login", status_code=303)(scope, receive, send)
            return
        try:
            principal = await self.authenticator.authenticate(secret)
            permission = admin_permission(scope["method"], path)
            if not allows(principal, permission):
                raise PermissionDeniedError(
                    f"The role '{principal.role}' does not have the '{permission}' permission this route needs.",
                    code="role_not_allowed",
                )
        except GatewayError as error:
            if path.startswith("/ui") and error.status == 401:
                # A stale cookie (revoked or expired key): back to the login page, cookie dropped.
                redirect = RedirectResponse("/ui/login", status_code=303)
                redirect.delete_cookie("opsgate_key", path="/")
                await redirect(scope, receive, send)
                return
            await error_response(error)(scope, receive, send)
            return
        state["principal"] = principal
        await self.app(scope, receive, send)


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
