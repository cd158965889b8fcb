"""The bounded wait line in front of an in-process model."""

from __future__ import annotations

import asyncio

import pytest

from opsgate.backends.work_queue import ADMISSION, Admission, WorkQueue
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


async def _queued(queue: WorkQueue, owner: str | None, order: list[str], name: str, gate: asyncio.Event) -> None:
    ADMISSION.set(Admission(owner))
    async with queue.slot():
        order.append(name)
        await gate.wait()


async def test_owners_take_turns_so_one_cannot_push_another_behind_all_of_its_calls() -> None:
    # Before, the line was one FIFO: tenant B's call waited behind all of tenant A's (an outside probe
    # queued 32 long generations from one key; every other tenant then waited minutes or got 503).
    queue = WorkQueue("m", slots=1, max_waiting=32, timeout=30)
    order: list[str] = []
    gate = asyncio.Event()
    gate.set()
    await queue.acquire()  # a job runs; everyone below waits
    tasks = [asyncio.create_task(_queued(queue, "a", order, f"a{n}", gate)) for n in range(5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(_queued(queue, "b", order, "b0", gate)))
    await asyncio.sleep(0.01)
    assert queue.waiting == 6
    queue.release()
    await asyncio.gather(*tasks)
    assert order == ["a0", "b0", "a1", "a2", "a3", "a4"]  # B's call is served second, not sixth
    assert queue.status() == {"running": 0, "waiting": 0, "max_waiting": 32, "rejected": 0}


async def test_one_owner_cannot_fill_the_line() -> None:
    queue = WorkQueue("m", slots=1, max_waiting=4, timeout=30)
    assert queue.owner_limit == 3
    gate = asyncio.Event()
    order: list[str] = []
    await queue.acquire()
    hog = [asyncio.create_task(_queued(queue, "a", order, f"a{n}", gate)) for n in range(3)]
    await asyncio.sleep(0.01)
    ADMISSION.set(Admission("a"))
    with pytest.raises(OverloadedError, match="its share"):
        await queue.acquire()
    other = asyncio.create_task(_queued(queue, "b", order, "b0", gate))  # the place kept for the others
    await asyncio.sleep(0.01)
    assert queue.waiting == 4
    gate.set()
    queue.release()
    await asyncio.gather(*hog, other)
    assert order[:2] == ["a0", "b0"]


async def test_a_turn_handed_to_a_caller_that_gave_up_goes_to_the_next() -> None:
    queue = WorkQueue("m", slots=1, max_waiting=8, timeout=30)
    order: list[str] = []
    gate = asyncio.Event()
    gate.set()
    await queue.acquire()
    first = asyncio.create_task(_queued(queue, "a", order, "a0", gate))
    second = asyncio.create_task(_queued(queue, "b", order, "b0", gate))
    await asyncio.sleep(0.01)
    queue.release()  # a0's turn is set…
    first.cancel()  # …and a0 gives up before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 5)
    assert order == ["b0"]
    assert queue.status()["running"] == 0 and queue.waiting == 0 and queue.has_free_slot()


async def test_without_an_owner_the_whole_line_is_usable() -> None:
    # Auth off (or the operator): one caller, no one to keep places for (the share cut the line to 3 of 4).
    queue = WorkQueue("m", slots=1, max_waiting=4, timeout=30)
    order: list[str] = []
    gate = asyncio.Event()
    await queue.acquire()
    tasks = [asyncio.create_task(_queued(queue, None, order, f"n{i}", gate)) for i in range(4)]
    await asyncio.sleep(0.01)
    assert queue.waiting == 4 and queue.rejected == 0
    gate.set()
    queue.release()
    await asyncio.gather(*tasks)
    assert order == ["n0", "n1", "n2", "n3"]


async def test_callers_that_give_up_leave_the_line_at_once() -> None:
    queue = WorkQueue("m", slots=1, max_waiting=8, timeout=30)
    gate = asyncio.Event()
    gate.set()
    await queue.acquire()
    quitters = [asyncio.create_task(_queued(queue, "a", [], f"a{i}", gate)) for i in range(5)]
    await asyncio.sleep(0.01)
    for task in quitters:
        task.cancel()
    await asyncio.gather(*quitters, return_exceptions=True)
    assert queue.waiting == 0 and not queue._lines  # no stale places kept for "a" in the rotation
    order: list[str] = []
    later = [asyncio.create_task(_queued(queue, owner, order, owner, gate)) for owner in ("b", "a")]
    await asyncio.sleep(0.01)
    queue.release()
    await asyncio.gather(*later)
    assert order == ["b", "a"]  # "a" queued after "b", and its abandoned calls kept no earlier place


async def test_a_line_that_does_not_move_says_for_how_long() -> None:
    queue = WorkQueue("m", slots=1, max_waiting=8, timeout=30)
    assert queue.stalled_for() == 0.0
    await queue.acquire()
    await asyncio.sleep(0.05)
    assert queue.stalled_for() >= 0.04
    queue.release()
    assert queue.stalled_for() == 0.0
