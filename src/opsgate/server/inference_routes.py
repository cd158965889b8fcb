"""The ``/v1`` inference routes' shortcut past Starlette's router (the innermost middleware of the app)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

try:  # Starlette's own (private) helper for a route's errors: if a release moves it, routes go the ordinary way
    from starlette._exception_handler import wrap_app_handling_exceptions

    SHORTCUT_ROUTES = True
except ImportError:  # pragma: no cover - depends on the installed Starlette
    SHORTCUT_ROUTES = False


class InferenceRoutes:
    """The ``/v1`` inference routes, straight to their handler: Starlette's exception layer, route search and
    ``request_response`` wrappers cost every request ~15 µs (two ``Request`` objects, two wrapped ``send``s,
    the search), for a result known here.

    Innermost of the app's middleware. A POST to exactly one of ``routes``' paths (no ``root_path``) gets what
    the router would give it: ``scope``'s ``router``, ``endpoint`` and ``path_params``, and the app's
    exception handlers, applied as Starlette's ``wrap_app_handling_exceptions`` applies them (a handled
    error once the response has started is a ``RuntimeError``). Everything else goes on to Starlette.
    """

    def __init__(self, app: ASGIApp, routes: list[Route], handlers: dict[Any, Any]) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes if route.methods == {"POST"}}
        self.handlers = handlers
        # What ExceptionMiddleware puts in the scope: (handlers by exception class, by status code).
        self.scope_handlers: tuple[dict[Any, Any], dict[int, Any]] = (handlers, {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or scope.get("root_path") or "app" not in scope:
            await self.app(scope, receive, send)
            return
        scope["starlette.exception_handlers"] = self.scope_handlers
        if "router" not in scope:
            scope["router"] = scope["app"].router
        scope["endpoint"] = route.endpoint
        scope["route"] = route  # as Starlette's router sets it (middleware that names requests by route reads it)
        scope["path_params"] = dict(scope.get("path_params", {}))
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(request)
        except Exception as error:  # nothing sent yet: the app's handler answers, as the route's wrapper did
            handler = self._handler(error)
            if handler is None:
                raise
            answer = await handler(request, error)
            await answer(scope, receive, send)
            error.__traceback__ = None  # reused exception instances would pile up tracebacks
            return
        if type(response) is not Response:  # a stream: Starlette's wrapper tells whether it had started
            await wrap_app_handling_exceptions(response, request)(scope, receive, send)
            return
        try:
            await response(scope, receive, send)
        except Exception as error:
            # A plain Response fails only in or after its first send: it has started.
            if self._handler(error) is not None:
                raise RuntimeError("Caught handled exception, but response already started.") from error
            raise

    def _handler(self, error: Exception) -> Any:
        for cls in type(error).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None
