"""A bounded wait line in front of an in-process model: one job runs, a few wait, the rest get 503.

Jobs are served in arrival order and never interrupt each other; a job that waits longer than
``timeout`` gives up with 503 and ``Retry-After`` rather than hanging.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from opsgate.domain.errors import OverloadedError


class WorkQueue:
    """Admits ``slots`` jobs at a time and at most ``max_waiting`` more in line."""

    def __init__(self, name: str, *, slots: int = 1, max_waiting: int = 32, timeout: float = 120.0) -> None:
        self.name = name
        self.slots = slots
        self.max_waiting = max_waiting
        self.timeout = timeout
        self._semaphore = asyncio.Semaphore(slots)
        self.waiting = 0
        self.running = 0
        self.rejected = 0
        self._avg_job_seconds = 1.0

    def retry_after(self) -> int:
        """Seconds a rejected client should wait: the line ahead of it at the recent job time."""
        return max(1, math.ceil((self.waiting + self.running) * self._avg_job_seconds / self.slots))

    def observe_job(self, seconds: float) -> None:
        """Feed a job's duration into the estimate behind ``Retry-After``."""
        self._avg_job_seconds = 0.8 * self._avg_job_seconds + 0.2 * seconds

    def has_free_slot(self) -> bool:
        """Whether ``acquire`` would take a slot at once (free, nobody ahead) without suspending."""
        return not self._semaphore.locked() and not self.waiting

    async def acquire(self) -> None:
        """Wait in line for a slot; raise OverloadedError when the line is full or the wait too long."""
        if self.has_free_slot():
            await self._semaphore.acquire()  # free and nobody ahead: no suspension, no race
            self.running += 1
            return
        if self.waiting >= self.max_waiting:
            self.rejected += 1
            raise OverloadedError(
                f"{self.name} is busy: {self.running} running and {self.waiting} waiting (the limit).",
                retry_after=self.retry_after(),
            )
        self.waiting += 1
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self.timeout)
        except TimeoutError:
            self.rejected += 1
            raise OverloadedError(
                f"{self.name} is busy: waited {self.timeout:.0f}s for a turn.", retry_after=self.retry_after()
            ) from None
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        """Give the slot back (exactly once per successful ``acquire``)."""
        self.running -= 1
        self._semaphore.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block, after waiting in line if needed."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def status(self) -> dict[str, int]:
        """Queue depth for ``/readyz``."""
        return {
            "running": self.running,
            "waiting": self.waiting,
            "max_waiting": self.max_waiting,
            "rejected": self.rejected,
        }
