"""Per-event cost of the SSE send deadline: a timer armed on every send (0a9a7f1) vs only while uvicorn's
flow control is paused (this tree). Both in one process, rounds alternating.

    nice -n 10 .venv/bin/python bench/sse_send_deadline.py [events per round] [rounds]

Two measurements, each old / new:
- ``_send`` alone, to a ``send`` that returns at once (what uvicorn's send does while not paused);
- a whole ``SseResponse`` at the ASGI level (spec 2.4), ``events`` small chunks through ``chunks()``,
  ``_sse`` and orjson to the same ``send``: the share of the per-event path the timer was.
The receive callable carries a uvicorn-like cycle (``transport``, ``flow``), found as under uvicorn.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Message, Send

from opsgate.domain.context import StreamResult
from opsgate.domain.errors import ClientStalled
from opsgate.server.http_io import SseResponse


class OldSseResponse(SseResponse):
    """``_send`` as in 0a9a7f1: an ``asyncio.timeout`` around every send."""

    async def _send(self, send: Send, message: Message) -> bool:
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            self.result.outcome.error = ClientStalled(self.send_timeout)
            return False
        return self.transport is None or not self.transport.is_closing()


class _Flow:
    write_paused = False


class _Cycle:
    """The parts of uvicorn's request cycle ``SseResponse`` reads through ``receive``."""

    def __init__(self) -> None:
        self.transport = self
        self.flow = _Flow()

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass

    async def receive(self) -> Message:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}


async def _noop_send(message: Message) -> None:
    return None


def _result(events: int) -> StreamResult:
    async def source() -> AsyncIterator[dict[str, Any]]:
        chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "tok"}}]}
        for _ in range(events):
            yield dict(chunk, choices=[{"index": 0, "delta": {"content": "tok"}}])

    return StreamResult(source=source())


async def _sends(cls: type[SseResponse], events: int) -> float:
    response = cls(_result(0))
    cycle = _Cycle()
    response.transport, response.flow = cycle, cycle.flow
    message: Message = {"type": "http.response.body", "body": b"data: x\n\n", "more_body": True}
    send = _noop_send
    started = time.perf_counter()
    for _ in range(events):
        await response._send(send, message)
    return (time.perf_counter() - started) / events * 1e6


async def _stream(cls: type[SseResponse], events: int) -> float:
    cycle = _Cycle()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}
    response = cls(_result(events))
    started = time.perf_counter()
    await response(scope, cycle.receive, _noop_send)
    return (time.perf_counter() - started) / events * 1e6


async def main(events: int, rounds: int) -> None:
    for name, run in (("_send alone", _sends), ("whole SseResponse", _stream)):
        old: list[float] = []
        new: list[float] = []
        await run(SseResponse, 2000)  # warm-up
        await run(OldSseResponse, 2000)
        for index in range(rounds):
            order = (OldSseResponse, SseResponse) if index % 2 == 0 else (SseResponse, OldSseResponse)
            for cls in order:
                (old if cls is OldSseResponse else new).append(await run(cls, events))
        print(
            f"{name}: us per event, old (timer on every send) / new (timer only while paused):"
            f" median {statistics.median(old):.2f} / {statistics.median(new):.2f};"
            f" rounds old {', '.join(f'{v:.2f}' for v in old)}; new {', '.join(f'{v:.2f}' for v in new)}"
        )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, int(sys.argv[2]) if len(sys.argv) > 2 else 6))
