"""The bounded wait line in front of an in-process model."""

from __future__ import annotations

import asyncio

import pytest

from opsgate.backends.work_queue import WorkQueue
from opsgate.domain.errors import OverloadedError


async def test_serves_in_arrival_order_one_at_a_time() -> None:
    queue = WorkQueue("m", slots=1, max_waiting=10, timeout=5)
    order: list[int] = []
    active = 0

    async def job(n: int) -> None:
        nonlocal active
        async with queue.slot():
            active += 1
            assert active == 1
            order.append(n)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.gather(*(job(n) for n in range(6)))
    assert order == list(range(6))


async def test_full_line_is_rejected_with_retry_after() -> None:
    queue = WorkQueue("m", slots=1, max_waiting=1, timeout=5)
    queue.observe_job(2.0)
    release = asyncio.Event()

    async def hold() -> None:
        async with queue.slot():
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]  # one running, one waiting
    await asyncio.sleep(0.01)
    with pytest.raises(OverloadedError) as error:
        await queue.acquire()
    assert error.value.status == 503 and int(error.value.headers["Retry-After"]) >= 1
    assert queue.status()["rejected"] == 1
    release.set()
    await asyncio.gather(*holders)
    assert queue.status() == {"running": 0, "waiting": 0, "max_waiting": 1, "rejected": 1}


async def test_waiting_past_timeout_is_rejected() -> None:
    queue = WorkQueue("m", slots=1, max_waiting=5, timeout=0.05)
    await queue.acquire()
    with pytest.raises(OverloadedError, match="waited"):
        await queue.acquire()
    queue.release()
    assert queue.waiting == 0 and queue.running == 0
