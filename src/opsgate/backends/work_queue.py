"""A bounded wait line in front of a model or a deployment: some jobs run, a few wait, the rest get 503.

Waiting jobs are served turn by turn across their owners (the request's tenant), in arrival order
within one owner, and no owner may hold more than ``owner_share`` of the line: one tenant that opens
many calls cannot fill the line or push another tenant's call behind all of its own (an outside probe
filled the embedded model's 32 places from one key and every other tenant got 503 at once). A job
that waits longer than ``timeout`` gives up with 503 and ``Retry-After`` rather than hanging.

Who owns a job, and whether it is still in line, travels in a context variable (``ADMISSION``) that
the router sets for each call: the backends' own lines (``InProcessBackend.queue``) see the caller
without any signature knowing about tenants, and the router can tell a deadline that ran out while
the call still waited its turn (load: 503, no verdict on the model) from one the model used up.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass

from opsgate.domain.errors import OverloadedError


@dataclass
class Admission:
    """A call's owner in the lines it joins, and whether it is waiting in one now."""

    owner: str | None
    in_line: bool = False
    waited: float = 0.0  # seconds spent in lines before a turn came


ADMISSION: ContextVar[Admission | None] = ContextVar("opsgate_queue_admission", default=None)


class WorkQueue:
    """Admits ``slots`` jobs at a time and at most ``max_waiting`` more in line, turn by turn per owner."""

    def __init__(
        self,
        name: str,
        *,
        slots: int = 1,
        max_waiting: int = 32,
        timeout: float = 120.0,
        owner_share: float = 0.75,
    ) -> None:
        self.name = name
        self.slots = slots
        self.max_waiting = max_waiting
        self.timeout = timeout
        # Places one owner may hold in the line: the rest are kept for the others.
        self.owner_limit = max(1, math.ceil(max_waiting * owner_share))
        self._free = slots
        self._lines: dict[str | None, deque[asyncio.Future[None]]] = {}  # insertion order = whose turn
        self._waiting_by_owner: dict[str | None, int] = {}
        self.waiting = 0
        self.running = 0
        self.rejected = 0
        self._avg_job_seconds = 1.0
        self._progress_at = 0.0  # loop time of the last job start on an idle line or job end: the line moving

    def retry_after(self) -> int:
        """Seconds a rejected client should wait: the line ahead of it at the recent job time."""
        return max(1, math.ceil((self.waiting + self.running) * self._avg_job_seconds / self.slots))

    def observe_job(self, seconds: float) -> None:
        """Feed a job's duration into the estimate behind ``Retry-After``."""
        self._avg_job_seconds = 0.8 * self._avg_job_seconds + 0.2 * seconds

    def stalled_for(self) -> float:
        """Seconds since the line last moved (a job ended, or one started on an idle line); 0 when idle."""
        if not self.running:
            return 0.0
        return asyncio.get_running_loop().time() - self._progress_at

    def has_free_slot(self) -> bool:
        """Whether ``acquire`` would take a slot at once (free, nobody waiting) without suspending."""
        return self._free > 0 and not self.waiting

    async def acquire(self) -> None:
        """Wait in line for a slot; raise OverloadedError when the line (or the owner's share) is full or
        the wait too long."""
        if self.has_free_slot():
            self._free -= 1  # free and nobody ahead: no suspension, no race
            if not self.running:
                self._progress_at = asyncio.get_running_loop().time()
            self.running += 1
            return
        admission = ADMISSION.get()
        owner = admission.owner if admission is not None else None
        if self.waiting >= self.max_waiting:
            self.rejected += 1
            raise OverloadedError(
                f"{self.name} is busy: {self.running} running and {self.waiting} waiting (the limit).",
                retry_after=self.retry_after(),
            )
        if owner is not None and self._waiting_by_owner.get(owner, 0) >= self.owner_limit:
            # (No owner: auth off or the operator, one caller with the whole line, as before.)
            self.rejected += 1
            raise OverloadedError(
                f"{self.name} is busy: this caller already has {self.owner_limit} requests waiting (its share"
                " of the line).",
                retry_after=self.retry_after(),
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lines.setdefault(owner, deque()).append(turn)
        self._waiting_by_owner[owner] = self._waiting_by_owner.get(owner, 0) + 1
        self.waiting += 1
        if admission is not None:
            admission.in_line = True
        joined = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(turn)
        except BaseException as error:
            if turn.done() and not turn.cancelled():
                self._free += 1  # handed a slot just as it gave up: pass the slot on
                self._hand_over()
            else:
                turn.cancel()
                self._leave_line(owner, turn)
            if isinstance(error, TimeoutError):
                self.rejected += 1
                raise OverloadedError(
                    f"{self.name} is busy: waited {self.timeout:.0f}s for a turn.", retry_after=self.retry_after()
                ) from None
            raise
        finally:
            self.waiting -= 1
            left = self._waiting_by_owner[owner] - 1
            if left:
                self._waiting_by_owner[owner] = left
            else:
                del self._waiting_by_owner[owner]
        if admission is not None:
            admission.in_line = False
            admission.waited += asyncio.get_running_loop().time() - joined
        self.running += 1

    def release(self) -> None:
        """Give the slot back (exactly once per successful ``acquire``)."""
        self.running -= 1
        self._free += 1
        self._progress_at = asyncio.get_running_loop().time()
        self._hand_over()

    def _leave_line(self, owner: str | None, turn: asyncio.Future[None]) -> None:
        """Take a waiter that gave up out of its owner's line now (the line is at most ``owner_limit`` long), so
        abandoned calls do not pile up, nor keep a place in the rotation for their owner."""
        line = self._lines.get(owner)
        if line is None:
            return
        with suppress(ValueError):  # a turn handed over was taken out of its line already
            line.remove(turn)
        if not line:
            del self._lines[owner]

    def _hand_over(self) -> None:
        """Free slots to the next owners in turn: each owner's oldest live waiter, then that owner goes last."""
        while self._free > 0 and self._lines:
            owner, line = next(iter(self._lines.items()))
            del self._lines[owner]
            while line and line[0].done():
                line.popleft()  # gave up (timed out or cancelled) while waiting
            if not line:
                continue
            turn = line.popleft()
            if line:
                self._lines[owner] = line  # to the back: the other owners go first
            self._free -= 1
            turn.set_result(None)

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
