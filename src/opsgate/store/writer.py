"""The record writer: moves journaled records into the store in batches, off the request path.

It reads the journal rather than an in-memory queue, so memory stays bounded when storage is
down: the backlog grows on disk and is written when storage returns (or after a restart). It runs
as a thread of the gateway (``record.writer: thread``) or as the loop of the journal directory's
writer process (``store/writer_process.py``), reading every segment through a ``JournalReader``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from opsgate.domain.config import RetentionConfig
from opsgate.store.failures import refused_data, store_down
from opsgate.store.journal import SegmentSet
from opsgate.store.rejected import MAX_ERROR_CHARS, append_rejected
from opsgate.store.sql import SqlRecordStore

log = logging.getLogger("opsgate.store.writer")


def yield_cpu_to_requests() -> None:
    """Run the calling thread (Linux: the policy is per thread) as ``SCHED_IDLE``, else at nice 19.

    When the writer and a request-serving thread want the same core, the kernel preempts an idle-
    policy thread at once on the other's wakeup, where nice 10 still let a batch run for its slice
    (the gateway's p99 showed it). Under saturation the journal absorbs the backlog on disk and the
    writer catches up as soon as the core has slack; ``SCHED_IDLE`` still gets a sliver of CPU, so
    it is never starved outright.
    """
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, tid, 19)


def compete_for_cpu(tid: int | None = None) -> bool:
    """Give a thread of this process (default: the calling one) normal priority back; False where refused.

    Leaving ``SCHED_IDLE`` needs ``CAP_SYS_NICE`` or an ``RLIMIT_NICE`` of 20 (Linux); without them
    the writer stays idle-priority and catches up only when the load drops.
    """
    tid = threading.get_native_id() if tid is None else tid
    try:
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, tid, 0)
    except (OSError, AttributeError):
        return False
    return True


class RecordWriter:
    """Journal → store in batches, with backoff while storage is unavailable.

    ``start()`` runs it as a thread; ``run()`` runs it in the calling thread (the writer process).
    ``on_cycle`` is called once per loop turn (the process writes its status file there), and
    segments are looked for every ``claim_interval`` seconds.
    """

    def __init__(
        self,
        journal: SegmentSet,
        open_store: Callable[[], SqlRecordStore],
        *,
        batch_size: int = 1000,
        batch_bytes: int = 16 * 1024 * 1024,
        retention: RetentionConfig | None = None,
        flush_interval: float = 0.05,
        claim_interval: float = 30.0,
        on_cycle: Callable[[], None] | None = None,
        catch_up_bytes: int = 64 * 1024 * 1024,
        stall_seconds: float = 2.0,
    ) -> None:
        self.journal = journal
        self._open_store = open_store
        self.batch_size = batch_size
        # Bounds what one batch holds in memory (the lines, their parsed records, the store's copies):
        # a backlog of multi-MB records otherwise made batches of hundreds of MB (record.batch_max_mb).
        self.batch_bytes = batch_bytes
        self.retention = retention
        self.flush_interval = flush_interval
        self.store: SqlRecordStore | None = None
        self.healthy = False
        self.last_error: str | None = None
        self.written = 0
        self.expired_deleted = 0
        self.last_write_at: float | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name="opsgate-record-writer", daemon=True)
        self._next_retention = time.monotonic() + 5.0
        self.claim_interval = claim_interval
        self._next_claim = time.monotonic() + claim_interval
        self._on_cycle = on_cycle
        # Past this backlog the writer competes for the CPU at normal priority until it is halved:
        # idle priority protects the request path's p99 in a burst, this bounds the lag when a
        # saturated gateway would otherwise leave the writer no idle time at all.
        self.catch_up_bytes = catch_up_bytes
        self.catching_up = False
        self._warned_priority = False
        self.stall_seconds = stall_seconds
        self._batches_stored = 0
        self._stall_boost = False
        self.rejected = 0  # lines set aside by this writer (rejected.jsonl.txt keeps them)
        self.last_rejected_error: str | None = None

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything journaled so far is stored (tests, shutdown, CLI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.journal.pending_bytes() == 0 and self.healthy:
                return True
            self._wake.set()
            time.sleep(0.01)
        return False

    def stop(self, timeout: float = 30.0) -> None:
        """Store what is left (while storage answers), then stop."""
        self.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Still inside a batch (a big backlog): closing its connection under a running
            # sqlite3_step crashes the process. The journal keeps what is unstored for the next start.
            log.warning("record writer still busy after %.0f s; stopping without waiting for it", timeout)
            return
        if self.store is not None:
            self.store.close()

    def request_stop(self) -> None:
        """Ask the loop to store what is left (while storage answers) and return; does not wait."""
        self._stopping.set()
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """State for ``/readyz`` and metrics."""
        return {
            "healthy": self.healthy,
            "last_error": self.last_error,
            "written": self.written,
            "pending_bytes": self.journal.pending_bytes(),
            "segments": len(self.journal.segments),
            "last_write_at": self.last_write_at,
            "expired_deleted": self.expired_deleted,
            "catching_up": self.catching_up,
            "rejected": self.rejected,
            "last_rejected_error": self.last_rejected_error,
        }

    def _fail(self, what: str, error: Exception) -> None:
        message = f"{what}: {type(error).__name__}: {error}"
        if message != self.last_error:
            log.error("record store unavailable (%s); records wait in the journal", message)
        self.healthy = False
        self.last_error = message

    def run(self) -> None:
        """The loop: until ``request_stop``, store what the journal holds, then what is left."""
        # Started before this thread drops to idle priority, so the watchdog keeps normal priority.
        watchdog = threading.Thread(
            target=self._watch_for_stalls, args=(threading.get_native_id(),), name="opsgate-writer-watch", daemon=True
        )
        watchdog.start()
        # Idle priority only once the store is open: opened at idle priority on a busy machine, the store
        # could wait seconds for a core, and /readyz says "degraded" (store not open) until it is.
        idle = False
        backoff = 0.1
        while True:
            now = time.monotonic()
            if now >= self._next_claim:
                self._next_claim = now + self.claim_interval
                self.journal.claim_orphans()  # a sibling worker may have died (thread), new segments (process)
            if self._on_cycle is not None:
                self._on_cycle()
            if self.store is None:
                try:
                    self.store = self._open_store()
                    self.healthy = True
                    self.last_error = None
                    backoff = 0.1
                except Exception as error:
                    self._fail("cannot open store", error)
                    if self._stopping.is_set():
                        return
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            if not idle:
                yield_cpu_to_requests()
                idle = True
            batch, full = self.journal.read_bounded(self.batch_size, self.batch_bytes)
            if not batch:
                self._housekeeping()
                if self._stopping.is_set():
                    return
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                continue
            self._pace(full)
            failure = self._store_batch([line for _, _, line in batch])
            if failure is not None:
                self._fail("write failed", failure)
                if self._stopping.is_set() and backoff >= 5.0:
                    return  # storage is down at shutdown: the journal keeps the records for next start
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if not self.healthy:
                log.info("record store is back; writing the journal backlog")
            self.healthy = True
            self.last_error = None
            self.last_write_at = time.time()
            for segment, offset, _ in batch:
                self.journal.mark_stored(segment, offset)
            self._batches_stored += 1
            if self._stall_boost and not full:
                self._stall_boost = False  # a partial batch stored: caught up with what was written
                self.catching_up = False
                yield_cpu_to_requests()
            if not full and not self._stopping.is_set():
                # Gather for a moment: one transaction per interval, not one per request. Records are
                # durable in the journal already; this only delays when search sees them.
                self._wake.wait(self.flush_interval)
                self._wake.clear()

    def _watch_for_stalls(self, writer_tid: int) -> None:
        """Raise a starved writer to normal priority: records wait at most about ``stall_seconds``.

        At idle priority the writer gets almost no CPU while other processes keep both cores busy, so
        a backlog far below ``catch_up_bytes`` (one multi-MB prompt, a quiet gateway on a busy host)
        could wait for as long as the load lasts. This thread keeps normal priority and only looks.
        """
        last = -1
        since = time.monotonic()
        while not self._stopping.wait(min(0.5, self.stall_seconds / 2)):
            now = time.monotonic()
            if self._batches_stored != last or self.journal.pending_bytes() == 0 or not self.healthy:
                last, since = self._batches_stored, now
                continue
            if not self.catching_up and now - since >= self.stall_seconds and compete_for_cpu(writer_tid):
                self._stall_boost = True
                self.catching_up = True
                log.info("record writer made no progress for %.1f s at idle priority: it competes for CPU", now - since)

    def _pace(self, full_batch: bool) -> None:
        """Switch between idle priority and catching up, by the journal's backlog."""
        if self._stall_boost:
            return  # raised by the watchdog: back to idle once it has stored everything it could read
        if not self.catching_up and not full_batch:
            return  # a partial batch: the writer keeps up, no backlog to measure
        backlog = self.journal.pending_bytes()
        if not self.catching_up and backlog > self.catch_up_bytes:
            if compete_for_cpu():
                self.catching_up = True
                log.warning("record journal backlog %d MiB: the writer competes for CPU until it halves", backlog >> 20)
            elif not self._warned_priority:
                self._warned_priority = True
                log.warning(
                    "record journal backlog %d MiB, and the writer may not raise its priority (needs CAP_SYS_NICE "
                    "or RLIMIT_NICE 20): it catches up when the load drops",
                    backlog >> 20,
                )
        elif self.catching_up and backlog < self.catch_up_bytes // 2:
            yield_cpu_to_requests()
            self.catching_up = False
            log.info("record journal backlog %d MiB: the writer is back at idle priority", backlog >> 20)

    def _store_batch(self, lines: list[bytes]) -> Exception | None:
        """Store a batch; the error if the store could not take it (and nothing was set aside instead)."""
        assert self.store is not None
        try:
            self.written += self.store.write_lines(lines)
        except Exception as error:
            if not store_down(self.store, error) and self._write_one_by_one(lines):
                return None
            return error
        return None

    def _write_one_by_one(self, lines: list[bytes]) -> bool:
        """After a failed batch: store what stores, set aside what never will. False if the store is down."""
        assert self.store is not None
        rejected: list[dict[str, Any]] = []
        errors: list[Exception] = []
        for line in lines:
            try:
                self.written += self.store.write_lines([line])
            except Exception as error:
                if store_down(self.store, error):
                    return False  # the store went away meanwhile: retry the batch later
                errors.append(error)
                rejected.append(
                    {
                        "error": f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS],
                        "at": time.time(),
                        "line": line.decode(errors="replace"),
                    }
                )
        if len(rejected) == len(lines) and len(lines) > 1 and not all(refused_data(self.store, e) for e in errors):
            return False  # nothing stores, for reasons other than the data: the store itself is the problem
        if not rejected:
            return True
        # A record the store refuses while others go in would block the journal forever: set it aside,
        # counted and shown in /readyz and /metrics, for ``opsgate logs replay-rejected`` once fixed.
        path = append_rejected(self.journal.directory, rejected)
        self.rejected += len(rejected)
        self.last_rejected_error = str(rejected[-1]["error"])
        log.error("set aside %d record(s) the store refused, in %s: %s", len(rejected), path, self.last_rejected_error)
        return True

    def _housekeeping(self) -> None:
        for segment in list(self.journal.segments):
            self.journal.discard_torn_tail(segment)
        self.journal.delete_finished()
        now = time.monotonic()
        if self.retention is not None and self.store is not None and now >= self._next_retention:
            self._next_retention = now + self.retention.interval_seconds
            if self.retention.default_days is not None or self.retention.rules:
                try:
                    deleted = self.store.delete_expired(self.retention, pause=0.005)
                    self.expired_deleted += deleted
                    if deleted:
                        log.info("retention: deleted %d expired records", deleted)
                except Exception as error:
                    self._fail("retention failed", error)
