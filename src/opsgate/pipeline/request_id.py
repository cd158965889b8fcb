"""Stage: give every request an id (the client's ``X-Request-Id`` when it is sane) and echo it back."""

from __future__ import annotations

import itertools
import os
import re

from opsgate.domain.context import GatewayResponse, RequestContext
from opsgate.pipeline.stage import PassStage

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdStage(PassStage):
    """Sets ``ctx.request_id`` and the ``x-request-id`` response header.

    New ids are a random per-process prefix and a counter: unique across processes and restarts,
    and without a ``uuid4`` (an ``os.urandom`` syscall) on every request.
    """

    name = "request_id"

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """Take the client's id if it is safe to log, else make one."""
        given = ctx.headers.get("x-request-id")
        ctx.request_id = given if given and _SANE_ID.match(given) else f"{self._prefix}{next(self._counter):08x}"
        return None

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        """Echo the id so a client can quote it to the operator."""
        response.headers["x-request-id"] = ctx.request_id
        return response
