"""Stage: give every request a gateway-made id and echo it back; the client's ``X-Request-Id`` is kept apart.

The record's id is always the gateway's: a client-chosen id as the key would let one record hide
another (inserts skip ids already stored, so a replayed journal stores nothing twice), whether by
a retry with the same id or by an unauthenticated request naming another tenant's id. The client's
id, when it is sane, is recorded as ``client_request_id`` and searchable (``client_request_id=``).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping

from opsgate.domain.context import GatewayResponse, RequestContext
from opsgate.pipeline.stage import PassStage

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def client_request_id(headers: Mapping[str, str] | None) -> str | None:
    """The client's ``X-Request-Id`` if it is safe to log and search (else None)."""
    given = headers.get("x-request-id") if headers is not None else None
    return given if given and _SANE_ID.match(given) else None


class RequestIdStage(PassStage):
    """Sets ``ctx.request_id`` and the ``x-request-id`` response header.

    Ids are a random per-process prefix and a counter: unique across processes and restarts,
    and without a ``uuid4`` (an ``os.urandom`` syscall) on every request.
    """

    name = "request_id"

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """Make the request's id (never the client's: see the module docstring); the HTTP layer may have
        made it already, for a body it refused while the route read it (``server/http_io.BodyRefusal``)."""
        if not ctx.request_id:
            ctx.request_id = f"{self._prefix}{next(self._counter):08x}"
        return None

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        """Echo the id so a client can quote it to the operator (and find it at ``/admin/requests/{id}``)."""
        response.headers["x-request-id"] = ctx.request_id
        # On every answer: the deployment that served (or whose failure is answered); ``none`` when the
        # request never reached one (refused, invalid, unknown model, a cache hit).
        response.headers.setdefault("x-opsgate-deployment", ctx.visible_deployment() or "none")
        return response
