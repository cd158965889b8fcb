"""Refuse NUL in a request's path or query string, for every route, before any route sees it.

No identifier, filter or search term of ours can hold NUL, and PostgreSQL text refuses it outright
(a 500 deep in a query otherwise; on SQLite ``q=%00`` matched every row). One check at the edge
covers the routes that exist and those added later.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from opsgate.domain.errors import InvalidRequestError
from opsgate.server.http_io import INFERENCE_PATHS, error_response
from opsgate.server.protocol_rejects import record_unhandled


def _has_nul(raw: bytes) -> bool:
    return b"\x00" in raw or b"%00" in raw  # digits only: no case to fold


class UrlGuardMiddleware:
    """400 ``invalid_url`` for a path or query string that holds NUL (raw or percent-encoded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
            # The inference routes read no query (and must record every request): they are left alone.
            query = b"" if scope["path"] in INFERENCE_PATHS else scope.get("query_string", b"")
            where = "path" if _has_nul(path) else "query" if _has_nul(query) else None
            if where is not None:
                error = InvalidRequestError(
                    f"The request {where} contains a NUL character.", param=where, code="invalid_url"
                )
                quoted: dict[str, str] = {}
                if scope["path"].startswith("/v1/"):
                    # The API clients call: refused before any route, recorded like the HTTP layer's refusals.
                    record_id = record_unhandled(Request(scope), error, "invalid_url")
                    if record_id is not None:
                        quoted["x-request-id"] = record_id
                await error_response(error, quoted)(scope, receive, send)
                return
        await self.app(scope, receive, send)
