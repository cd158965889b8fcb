"""``DELETE /admin/cache``: purge the response cache (operator only: entries are keyed by hashes, not tenants)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from opsgate.domain.errors import GatewayError, NotFoundError
from opsgate.pipeline.stage import Pipeline
from opsgate.server.access import actor_of, require_operator
from opsgate.server.http_io import json_response
from opsgate.server.query_params import NoQuery, parse_query
from opsgate.store.record_log import RecordLog


class CacheHolder(Protocol):
    """What the purge needs from the gateway."""

    pipeline: Pipeline
    record_log: RecordLog | None


def cache_routes(holder: CacheHolder) -> list[Route]:
    """The cache admin routes."""

    async def purge(request: Request) -> Response:
        require_operator(request, "purge the response cache")
        parse_query(request, NoQuery)
        stage = next((s for s in holder.pipeline.stages if s.name == "cache"), None)
        purge_cache: Callable[[], Awaitable[int]] | None = getattr(stage, "purge", None)
        if purge_cache is None:
            raise NotFoundError("The response cache is not enabled (cache.enabled).", code="cache_disabled")
        try:
            dropped = await purge_cache()
        except Exception as error:  # Redis unreachable: say so, the purge did not happen
            raise GatewayError(f"The cache store could not be purged: {type(error).__name__}: {error}") from None
        if holder.record_log is not None:
            record_log = holder.record_log
            await run_in_threadpool(
                lambda: record_log.store.audit(actor_of(request), "cache_purge", None, {"entries": dropped})
            )
        return json_response({"object": "cache.purge", "entries_dropped": dropped})

    return [Route("/admin/cache", purge, methods=["DELETE"])]
