"""The pipeline runner: order of hooks, short-circuits, and failures turned into responses."""

from __future__ import annotations

from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext
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
