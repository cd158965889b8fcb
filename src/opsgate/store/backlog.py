"""Admission by the journal's backlog: shed large requests first, then everything, before the disk fills.

The journal takes every record before the client gets its answer, and the writer stores them as the
store allows; under a sustained flood of large prompts intake outruns the store and, unbounded, the
backlog fills the disk, after which every client's records are lost. ``BacklogGate`` bounds it:

- over ``record.max_backlog_mb`` (or below 1.25x ``record.min_free_disk_mb`` free), requests whose
  body is over ``record.shed_body_kb`` are refused (503 ``record_backlog``): they are what grows the
  journal, and small clients keep being served;
- over 1.25x the backlog bound (or below the free-space floor), every new request is refused.

A refusal is recorded without its payload (the pipeline writes its essentials), so refusing does
not grow the backlog it answers. The check runs per request, so it measures rarely: the backlog and
free space are read at most every ``refresh_interval`` seconds (a stat per segment in thread mode,
the writer's status file in process mode, one ``statvfs``); between reads, the bytes this process
appended since count against the headroom, so a flood cannot overshoot by a whole interval's intake.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsgate.domain.errors import OverloadedError

log = logging.getLogger("opsgate.store.backlog")

HARD_FACTOR = 1.25  # past this multiple of the bound (or below the free-space floor) every request is refused
REFRESH_INTERVAL = 0.2  # seconds between measurements of the backlog and free space
RETRY_AFTER = 5  # seconds a shed client is told to wait: about how long a writer takes to drain a few MB

OK, LARGE, ALL = 0, 1, 2
_STATE = {OK: "ok", LARGE: "shedding_large", ALL: "shedding_all"}


class RecordBacklogFull(OverloadedError):
    """The journal is over its bound; an overload like a full queue (same type, status and accounting)."""

    def __init__(self, message: str, *, retry_after: int = RETRY_AFTER) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code = "record_backlog"


def free_disk_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged process may still write on ``directory``'s filesystem (None: unknown)."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


class BacklogGate:
    """Decides per request whether its record may grow the journal; cheap between measurements."""

    def __init__(
        self,
        directory: Path,
        pending_bytes: Callable[[], int],
        appended_bytes: Callable[[], int],
        *,
        max_backlog_bytes: int,
        min_free_bytes: int,
        large_body_bytes: int,
        refresh_interval: float = REFRESH_INTERVAL,
        free_bytes: Callable[[Path], int | None] = free_disk_bytes,
    ) -> None:
        self.directory = directory
        self._pending_bytes = pending_bytes
        self._appended_bytes = appended_bytes
        self._free_bytes = free_bytes
        self.max_backlog_bytes = max_backlog_bytes
        self.min_free_bytes = min_free_bytes
        self.large_body_bytes = large_body_bytes
        self.refresh_interval = refresh_interval
        self.pending = 0
        self.free: int | None = None
        self.shed_large = 0  # large requests refused past the bound
        self.shed_all = 0  # requests of any size refused past the hard bound
        self.measured = 0
        self._next_refresh = 0.0
        self._base = 0  # appended_bytes() at the last measurement
        # Bytes that may still be appended before each level starts (from the last measurement).
        self._room_large = 1 << 62
        self._room_all = 1 << 62
        self._lock = threading.Lock()  # status() may measure from a scrape thread

    # -- the request path (event loop) --------------------------------------------------------------

    def refusal(self, body_bytes: int) -> RecordBacklogFull | None:
        """None to admit a request with a body of ``body_bytes``, else the error to answer it with."""
        now = time.monotonic()
        if now >= self._next_refresh:
            self.refresh(now)
        grown = self._appended_bytes() - self._base
        if grown < self._room_large:
            return None
        if grown >= self._room_all:
            self.shed_all += 1
            return RecordBacklogFull(
                "The request log's journal is over its hard bound (the store is behind or the disk is "
                "nearly full): the request was refused and recorded without its payload. Retry later."
            )
        if body_bytes > self.large_body_bytes:
            self.shed_large += 1
            return RecordBacklogFull(
                f"The request log's journal is over its bound: request bodies over {self.large_body_bytes} bytes "
                "are refused (and recorded without their payload) until the store catches up. Retry later, "
                "or send a smaller request."
            )
        return None

    def refresh(self, now: float | None = None) -> None:
        """Measure the backlog and free space now, and the headroom each shedding level has left."""
        with self._lock:
            base = self._appended_bytes()
            try:
                pending = self._pending_bytes()
            except Exception as error:  # a status file mid-replace, a segment gone: keep the last value
                log.debug("cannot measure the journal backlog: %s", error)
                pending = self.pending
            free = self._free_bytes(self.directory)
            room_large = self.max_backlog_bytes - pending
            room_all = int(self.max_backlog_bytes * HARD_FACTOR) - pending
            if free is not None and self.min_free_bytes > 0:
                room_large = min(room_large, free - int(self.min_free_bytes * HARD_FACTOR))
                room_all = min(room_all, free - self.min_free_bytes)
            level_before = self.level_at(base - self._base)
            self.pending, self.free, self._base = pending, free, base
            self._room_large, self._room_all = room_large, room_all
            self.measured += 1
            self._next_refresh = (time.monotonic() if now is None else now) + self.refresh_interval
        level = self.level_at(0)
        if level != level_before:
            log.warning(
                "record journal backlog %d MiB, %s MiB free: %s",
                pending >> 20,
                "?" if free is None else free >> 20,
                {OK: "admitting every request again", LARGE: "refusing large requests", ALL: "refusing every request"}[
                    level
                ],
            )

    def level_at(self, grown: int) -> int:
        """The shedding level once ``grown`` more bytes are appended (OK, LARGE or ALL)."""
        if grown >= self._room_all:
            return ALL
        return LARGE if grown >= self._room_large else OK

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` (``record.backlog``) and metrics: the level, what it was measured from, refusals."""
        if time.monotonic() >= self._next_refresh:
            self.refresh()  # no request has measured lately: a status must not show a stale level
        level = self.level_at(self._appended_bytes() - self._base)
        return {
            "state": _STATE[level],
            "pending_bytes": self.pending,
            "free_disk_bytes": self.free,
            "max_backlog_bytes": self.max_backlog_bytes,
            "min_free_disk_bytes": self.min_free_bytes,
            "large_body_bytes": self.large_body_bytes,
            "shed_large": self.shed_large,
            "shed_all": self.shed_all,
        }
