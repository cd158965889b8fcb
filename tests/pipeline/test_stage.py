"""The pipeline runner: order of hooks, short-circuits, and failures turned into responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from opsgate.domain.context import Chunk, GatewayResponse, JsonResult, RequestContext, StreamResult
from opsgate.domain.errors import InvalidRequestError
from opsgate.pipeline.stage import PassStage, Pipeline


class Tracing(PassStage):
    def __init__(self, name: str, log: list[str], short_circuit: bool = False, fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.short_circuit = short_circuit
        self.fail = fail

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        self.log.append(f"before:{self.name}")
        if self.fail:
            raise RuntimeError("stage bug")
        if self.short_circuit:
            return JsonResult({"short": self.name}, status=429)
        return None

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        self.log.append(f"after:{self.name}")
        return response


def ctx() -> RequestContext:
    return RequestContext(endpoint="chat", raw_body=b"{}", headers={})


async def test_before_in_order_after_in_reverse() -> None:
    log: list[str] = []

    async def terminal(_: RequestContext) -> GatewayResponse:
        log.append("backend")
        return JsonResult({"ok": True})

    pipeline = Pipeline([Tracing("a", log), Tracing("b", log)], terminal)
    response = await pipeline.handle(ctx())
    assert isinstance(response, JsonResult) and response.body == {"ok": True}
    assert log == ["before:a", "before:b", "backend", "after:b", "after:a"]
    assert pipeline.names == ["a", "b", "backend"]


async def test_short_circuit_skips_later_stages_but_runs_earlier_afters() -> None:
    log: list[str] = []

    async def terminal(_: RequestContext) -> GatewayResponse:
        raise AssertionError("backend must not run")

    pipeline = Pipeline([Tracing("a", log), Tracing("b", log, short_circuit=True), Tracing("c", log)], terminal)
    response = await pipeline.handle(ctx())
    assert isinstance(response, JsonResult) and response.status == 429
    assert log == ["before:a", "before:b", "after:b", "after:a"]


async def test_gateway_errors_and_bugs_become_responses() -> None:
    log: list[str] = []

    async def terminal(_: RequestContext) -> GatewayResponse:
        raise InvalidRequestError("nope", param="x")

    response = await Pipeline([Tracing("a", log)], terminal).handle(ctx())
    assert isinstance(response, JsonResult) and response.status == 400
    assert response.body["error"]["param"] == "x" and log == ["before:a", "after:a"]

    log.clear()
    response = await Pipeline([Tracing("a", log), Tracing("broken", log, fail=True)], terminal).handle(ctx())
    assert isinstance(response, JsonResult) and response.status == 500
    assert "broken" in response.body["error"]["message"]
    assert log == ["before:a", "before:broken", "after:broken", "after:a"]


class _Breaks(PassStage):
    name = "breaks"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        raise self.error


async def _stream_terminal_and_finished() -> tuple[Any, list[Any], list[str]]:
    finished: list[Any] = []
    closed: list[str] = []

    async def source() -> AsyncIterator[Chunk]:
        try:
            yield {"choices": []}
        finally:
            closed.append("source")

    async def terminal(_: RequestContext) -> GatewayResponse:
        stream = source()
        await anext(stream)  # the upstream call has begun
        result = StreamResult(source=stream)
        result.on_finish.append(lambda outcome: finished.extend(["slot released", outcome.error]))
        return result

    return terminal, finished, closed


async def test_a_stream_replaced_by_an_after_hooks_error_is_closed() -> None:
    # The stage's error became the answer and the stream was dropped unclosed: the router's slot, the
    # limits' reservation and the upstream call were never given back (review of SseResponse's close()).
    terminal, finished, closed = await _stream_terminal_and_finished()
    response = await Pipeline([_Breaks(RuntimeError("stage bug"))], terminal).handle(ctx())
    assert isinstance(response, JsonResult) and response.status == 500
    assert finished == ["slot released", response.error] and closed == ["source"]  # recorded as the 500


async def test_a_stream_cancelled_among_the_after_hooks_is_closed() -> None:
    terminal, finished, closed = await _stream_terminal_and_finished()
    with pytest.raises(asyncio.CancelledError):
        await Pipeline([_Breaks(asyncio.CancelledError())], terminal).handle(ctx())
    assert finished[0] == "slot released" and finished[1].status == 499 and closed == ["source"]


async def test_closing_an_unstarted_wrapper_closes_its_argument_not_what_it_captured() -> None:
    # On Python 3.11 an unstarted generator's frame also holds the variables a closure captured: a stream
    # shared with other requests must not be closed with this one (second review of 29c5a66).
    closed: list[str] = []

    async def stream(name: str) -> AsyncIterator[Chunk]:
        try:
            yield {"choices": []}
        finally:
            closed.append(name)

    shared, own = stream("shared"), stream("own")
    await anext(shared)
    await anext(own)

    def make_wrapper() -> Any:
        async def wrapper(inner: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
            _ = shared  # captured by the closure
            async for chunk in inner:
                yield chunk

        return wrapper

    result = StreamResult(source=make_wrapper()(own))
    await result.close()
    assert closed == ["own"]
    await shared.aclose()
