"""HTTP routes for SLOs, alerts, feedback, error groups and dashboard time series.

Every admin answer is scoped to the caller's tenant (``request.state.principal``); an operator sees
all. Store calls run in worker threads. Errors use the OpenAI shape.

Feedback may arrive before its request is stored (the writer flushes every ``flush_interval_ms``):
an unknown gateway-made request id makes the handler flush this process's writer and look again
for up to ``FEEDBACK_WAIT_SECONDS`` (another worker's writer stores its records within that time
too) before answering 404 — waiting on the event loop, not in a worker thread (``RequestFinder``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any, Protocol

from pydantic import BeforeValidator, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from opsgate.domain.errors import InvalidRequestError, NotFoundError
from opsgate.domain.slo_config import MEASURED_SLIS, duration_seconds
from opsgate.errors_trail.groups import error_groups
from opsgate.server.access import principal_of, scoped_tenant
from opsgate.server.admin import require_record_log
from opsgate.server.http_io import json_response, read_json_value
from opsgate.server.query_params import NoQuery, QueryModel, Time, one_of, parse_query, whole_number
from opsgate.slo import feedback as feedback_kpis
from opsgate.slo.service import SloService
from opsgate.store.query import parse_time
from opsgate.store.record_log import RecordLog

FEEDBACK_WAIT_SECONDS = 2.0
# The shape of the ids ``pipeline/request_id.py`` makes (16 hex digits of prefix, a hex counter);
# feedback on any other id can only name a record that is stored already.
GATEWAY_REQUEST_ID = re.compile(r"^[0-9a-f]{24,32}$")
_MAX_BODY_BYTES = 64 * 1024


class SloHolder(Protocol):
    """What these routes need from the gateway."""

    record_log: RecordLog | None
    slo: SloService


Handler = Callable[[Request, SloService], Awaitable[Response]]


def _route(holder: SloHolder, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        require_record_log(holder, "and SLOs, feedback and error groups are computed from it")
        return await handler(request, holder.slo)

    return endpoint


_MAX_STEP_S = 366 * 86_400


def _step(raw: object) -> int:
    text = str(raw)
    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else duration_seconds(text)
    except ValueError:
        raise ValueError("must be a duration like 10s, 1m or 1h") from None
    # 309 digits parse as inf (int() of it raised OverflowError: a 500); a year is more than any window.
    if not math.isfinite(seconds) or seconds < 1 or seconds != int(seconds) or seconds > _MAX_STEP_S:
        raise ValueError(f"must be a whole number of seconds, from 1 to {_MAX_STEP_S}")
    return int(seconds)


def _since(default: str) -> Any:
    """``since`` (``1h``, ``7d``, ISO 8601 or epoch seconds) with a default window."""
    return Field(default_factory=lambda: parse_time(default, "since"))


Limit = Annotated[int, whole_number(1, 1000)]


class FeedbackSummaryQuery(QueryModel):
    """``/admin/feedback/summary``."""

    by: str = "model"  # checked by the summary itself (model, tenant or day)
    since: Time = _since("30d")
    tenant: str | None = None


class HistoryQuery(QueryModel):
    """``/admin/slo/{name}/history``."""

    since: Time = _since("7d")


class AlertsQuery(QueryModel):
    """``/admin/alerts``."""

    state: Annotated[str, one_of(("firing", "resolved"))] | None = None
    limit: Limit = 100


class ErrorsQuery(QueryModel):
    """``/admin/errors``."""

    since: Time = _since("24h")
    limit: Limit = 100
    tenant: str | None = None


class TimeseriesQuery(QueryModel):
    """``/admin/stats/timeseries``."""

    since: Time = _since("1h")
    step: Annotated[int, BeforeValidator(_step)] = 60
    tenant: str | None = None


def _number(body: dict[str, Any], name: str, default: float | None) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(f"{name} must be a number.", param=name)
    return float(value)


async def _json_body(request: Request) -> Any:
    return await read_json_value(request, _MAX_BODY_BYTES)


# -- feedback --------------------------------------------------------------------------------------


class RequestFinder:
    """Finds the stored request a feedback post names, without letting unknown ids tie up threads.

    Before, each unknown id held a worker thread for up to ``FEEDBACK_WAIT_SECONDS`` (a flush, then
    polling with ``time.sleep``): 80 made-up ids took the whole pool every admin route shares, and
    a ``GET`` waited 3.75 s. Now each lookup is one indexed query in a thread, at most
    ``LOOKUP_SLOTS`` at a time; waiting happens on the event loop; concurrent waiters share one
    writer flush; and an id the gateway cannot have made is answered at once.
    """

    LOOKUP_SLOTS = 4

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(self.LOOKUP_SLOTS)
        self._flush: asyncio.Future[bool] | None = None

    async def find(self, record_log: RecordLog, request_id: str) -> dict[str, Any] | None:
        """The request's tenant, model and deployment, or None once it cannot be on its way any more."""
        found = await self._lookup(record_log, request_id)
        if found is not None or not GATEWAY_REQUEST_ID.match(request_id):
            return found  # not a gateway-made id: stored already or never, no need to wait
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FEEDBACK_WAIT_SECONDS
        if record_log.writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FEEDBACK_WAIT_SECONDS):
                    await asyncio.shield(self._shared_flush(record_log))
        delay = 0.05
        while True:
            found = await self._lookup(record_log, request_id)
            left = deadline - loop.time()
            if found is not None or left <= 0:
                return found
            # Another worker's writer stores its records in its own time: look again, less and less often.
            await asyncio.sleep(min(delay, left))
            delay *= 2

    async def _lookup(self, record_log: RecordLog, request_id: str) -> dict[str, Any] | None:
        async with self._slots:
            return await run_in_threadpool(feedback_kpis.find_request, record_log.store, request_id)

    def _shared_flush(self, record_log: RecordLog) -> asyncio.Future[bool]:
        # One flush (one thread) for every waiter that arrives while it runs.
        if self._flush is None or self._flush.done():
            writer = record_log.writer
            assert writer is not None
            self._flush = asyncio.ensure_future(run_in_threadpool(writer.flush, FEEDBACK_WAIT_SECONDS))
        return self._flush


async def post_feedback(request: Request, slo: SloService, finder: RequestFinder) -> Response:
    """``POST /v1/feedback``: thumbs or 1-5 stars on a request this caller may see; 201 with the id."""
    assert slo.record_log is not None
    parse_query(request, NoQuery)
    feedback = feedback_kpis.parse_feedback(await _json_body(request))
    record = await finder.find(slo.record_log, feedback.request_id)
    if record is None or not principal_of(request).can_read_tenant(record["tenant"]):
        raise NotFoundError(
            f"No request with id '{feedback.request_id}'.", param="request_id", code="request_not_found"
        )
    feedback_id = await run_in_threadpool(lambda: feedback_kpis.store_feedback(slo.store(), feedback, record))
    return json_response(
        {
            "id": feedback_id,
            "object": "feedback",
            "request_id": feedback.request_id,
            "score": feedback.raw_score,
            "positive": feedback.positive,
        },
        201,
    )


async def feedback_summary(request: Request, slo: SloService) -> Response:
    """``GET /admin/feedback/summary?by=model|tenant|day&since=30d``: CSAT and NPS-style KPIs."""
    assert slo.record_log is not None
    query = parse_query(request, FeedbackSummaryQuery)
    tenant = scoped_tenant(request, query.tenant)
    result = await run_in_threadpool(lambda: feedback_kpis.summary(slo.store(), query.by, query.since, tenant))
    return json_response(result)


# -- SLOs and alerts --------------------------------------------------------------------------------


async def slo_status(request: Request, slo: SloService) -> Response:
    """``GET /admin/slo``: every objective with value, budget left, burn rates and state."""
    parse_query(request, NoQuery)
    assert slo.engine is not None
    tenant = scoped_tenant(request, None)
    data = await run_in_threadpool(slo.engine.status, tenant)
    return json_response({"object": "list", "data": data})


async def slo_history(request: Request, slo: SloService) -> Response:
    """``GET /admin/slo/{name}/history?since=7d``: SLI and budget left over time."""
    assert slo.engine is not None
    since = parse_query(request, HistoryQuery).since
    tenant = scoped_tenant(request, None)
    data = await run_in_threadpool(slo.engine.history, request.path_params["name"], since, tenant)
    return json_response({"object": "list", "slo": request.path_params["name"], "data": data})


async def post_measurement(request: Request, slo: SloService) -> Response:
    """``POST /admin/slo/measurements`` ``{slo, value, ts?}``: a value of a measured SLI."""
    assert slo.engine is not None
    parse_query(request, NoQuery)
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) - {"slo", "value", "ts", "tenant"}:
        raise InvalidRequestError("The body must be {slo, value, ts?, tenant?}.", code="invalid_body")
    asked = body.get("tenant")
    if asked is not None and not isinstance(asked, str):
        raise InvalidRequestError("tenant must be a string.", param="tenant")
    tenant = scoped_tenant(request, asked)
    definition = slo.engine.definition(str(body.get("slo")), tenant)
    if definition.sli not in MEASURED_SLIS:
        raise InvalidRequestError(f"'{definition.name}' is computed from traffic, not measured.", param="slo")
    value, ts = _number(body, "value", None), _number(body, "ts", time.time())
    await run_in_threadpool(slo.engine.reader.add_measurement, definition.name, ts, value, tenant)
    return json_response({"object": "slo.measurement", "slo": definition.name, "ts": ts, "value": value}, 201)


async def alerts(request: Request, slo: SloService) -> Response:
    """``GET /admin/alerts?state=firing|resolved&limit=``: alert episodes, newest first."""
    assert slo.alerts is not None
    query = parse_query(request, AlertsQuery)
    tenant = scoped_tenant(request, None)
    data = await run_in_threadpool(slo.alerts.list, tenant, query.state, query.limit)
    return json_response({"object": "list", "data": data})


# -- errors and time series -------------------------------------------------------------------------


async def errors(request: Request, slo: SloService) -> Response:
    """``GET /admin/errors?since=24h&limit=``: failed requests grouped by signature."""
    assert slo.record_log is not None
    query = parse_query(request, ErrorsQuery)
    tenant = scoped_tenant(request, query.tenant)
    result = await run_in_threadpool(lambda: error_groups(slo.store(), query.since, tenant, limit=query.limit))
    return json_response(result)


async def timeseries(request: Request, slo: SloService) -> Response:
    """``GET /admin/stats/timeseries?since=1h&step=1m``: traffic, errors, latency percentiles, cost, tokens."""
    assert slo.engine is not None
    query = parse_query(request, TimeseriesQuery)
    tenant = scoped_tenant(request, query.tenant)
    step = query.step
    data, summary = await run_in_threadpool(slo.engine.window, query.since, step, tenant)
    # ``summary``: the window's totals, error rate and percentiles, so the dashboard never recomputes them.
    return json_response({"object": "list", "step": step, "data": data, "summary": summary})


def slo_routes(holder: SloHolder) -> list[Route]:
    """The SLO, alert, feedback, error-group and time-series routes over ``holder``."""
    return [
        Route("/v1/feedback", _route(holder, partial(post_feedback, finder=RequestFinder())), methods=["POST"]),
        Route("/admin/slo", _route(holder, slo_status), methods=["GET"]),
        Route("/admin/slo/measurements", _route(holder, post_measurement), methods=["POST"]),
        Route("/admin/slo/{name}/history", _route(holder, slo_history), methods=["GET"]),
        Route("/admin/alerts", _route(holder, alerts), methods=["GET"]),
        Route("/admin/errors", _route(holder, errors), methods=["GET"]),
        Route("/admin/feedback/summary", _route(holder, feedback_summary), methods=["GET"]),
        Route("/admin/stats/timeseries", _route(holder, timeseries), methods=["GET"]),
    ]
