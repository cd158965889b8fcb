"""An append-only, segmented journal: every record lands here before the client gets its answer.

A record is one JSON line written with ``os.write`` straight to the file, so once ``append``
returns it is in the kernel and survives ``kill -9`` of the gateway (``fsync=True`` makes it
survive power loss too, at a cost per request). A writer reads segments back and stores them; a
fully stored segment is deleted. Each process writes its own segments and holds an ``flock`` on
the one it appends to, so a free lock means "nobody appends here any more": the process rotated
away from it, stopped, or died.

Two readers exist. In thread mode the gateway's own writer thread reads its own segments (and
claims dead processes'), through ``Journal`` itself. In process mode (``hand_over=True``) the
gateway only appends and lets go of a segment's lock when it rotates; one writer process per
directory reads every segment through ``JournalReader`` — live ones up to their last complete
line, released ones to the end — and deletes them once stored.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("opsgate.store.journal")

SUFFIX = ".jsonl"
_CREATING = ".creating"  # a segment's name while it is created, before its owner holds the lock


@dataclass
class Segment:
    """One journal file, and how far the writer has read and stored it."""

    path: Path
    offset: int = 0
    lock_fd: int | None = None  # held while this process owns the segment
    active: bool = False  # someone may still append to it
    partial: bytes = field(default=b"", repr=False)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive ``flock`` on ``path``, or None if another process holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not path.exists():  # stored and deleted by someone else between open and lock
        os.close(fd)
        return None
    return fd


def _read_lines_from(path: Path, offset: int, chunk: int) -> bytes:
    """At least ``chunk`` bytes of ``path`` from ``offset`` (less at its end), and always its first whole line.

    A record holds the prompt twice, so one line can be larger than any fixed read: read on until
    a newline shows (or the file ends), else the long line and everything after it would never be
    stored. Memory stays bounded by the chunk plus one line.
    """
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(chunk)
        scanned = 0
        while len(data) >= chunk and data.find(b"\n", scanned) < 0:
            scanned = len(data)
            more = handle.read(len(data))  # doubling: a 12 MB line takes a few reads, not 12
            if not more:
                break
            data += more
    return data


class SegmentSet(ABC):
    """Segments being read back and stored: what a ``RecordWriter`` needs from a journal."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.segments: list[Segment] = []
        self._lock = threading.Lock()  # the list is shared by the event loop and the writer thread

    @abstractmethod
    def claim_orphans(self) -> int:
        """Take over segments nobody appends to any more; returns how many were taken."""

    def read_batch(self, limit: int) -> list[tuple[Segment, int, bytes]]:
        """Up to ``limit`` complete lines not yet stored, as (segment, offset after line, line)."""
        return self.read_bounded(limit, None)[0]

    def read_bounded(self, limit: int, max_bytes: int | None) -> tuple[list[tuple[Segment, int, bytes]], bool]:
        """``read_batch`` whose lines total at most ``max_bytes`` (the first line is always taken,
        however large), and whether it is full: a bound, not the journal's end, stopped it.

        Counted in lines alone, a backlog of many segments of multi-MB records made one batch of a
        line from every segment: hundreds of MB held by the writer and again by the store.
        """
        out: list[tuple[Segment, int, bytes]] = []
        budget = max_bytes if max_bytes is not None else 1 << 62
        taken = 0
        full = False
        with self._lock:
            segments = list(self.segments)
        for segment in segments:
            if full or len(out) >= limit:
                break
            chunk = min(max(1 << 20, 2048 * (limit - len(out))), max(budget - taken, 64 << 10))
            try:
                data = _read_lines_from(segment.path, segment.offset, chunk)
            except FileNotFoundError:
                continue
            position = segment.offset
            start = 0
            # Only lines that end in a newline: a live segment may be mid-append at its end.
            while len(out) < limit:
                end = data.find(b"\n", start)
                if end < 0:
                    break
                if out and taken + end - start > budget:
                    full = True
                    break
                position += end + 1 - start
                out.append((segment, position, data[start:end]))
                taken += end - start
                start = end + 1
            del data  # the chunk may hold a multi-MB line we did not take: not kept while reading on
        return out, full or len(out) >= limit

    def mark_stored(self, segment: Segment, offset: int) -> None:
        """Everything up to ``offset`` of ``segment`` is in storage."""
        segment.offset = max(segment.offset, offset)

    def delete_finished(self) -> int:
        """Delete segments nobody appends to that are fully stored; returns how many."""
        removed = 0
        with self._lock:
            segments = list(self.segments)
        for segment in segments:
            if segment.active or segment.lock_fd is None:
                continue
            try:
                size = segment.path.stat().st_size
            except FileNotFoundError:
                size = segment.offset
            if segment.offset >= size:
                self._drop(segment)
                removed += 1
        return removed

    def discard_torn_tail(self, segment: Segment) -> bool:
        """A dead process's segment ending mid-line (killed during a write): drop that fragment."""
        if segment.active or segment.lock_fd is None:
            return False
        size = segment.path.stat().st_size if segment.path.exists() else 0
        if segment.offset < size:
            with open(segment.path, "rb") as handle:
                handle.seek(segment.offset)
                rest = handle.read()
            if b"\n" not in rest:
                log.warning("dropping %d torn bytes at the end of %s", len(rest), segment.path.name)
                segment.offset = size
                return True
        return False

    def _drop(self, segment: Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        if segment.lock_fd is not None:
            os.close(segment.lock_fd)
            segment.lock_fd = None
        with self._lock:
            if segment in self.segments:
                self.segments.remove(segment)

    def pending_bytes(self) -> int:
        """Bytes written to these segments but not yet stored."""
        total = 0
        with self._lock:
            segments = list(self.segments)
        for segment in segments:
            try:
                total += max(0, segment.path.stat().st_size - segment.offset)
            except FileNotFoundError:
                continue
        return total


class Journal(SegmentSet):
    """This process's journal segments in ``directory``.

    With ``hand_over`` the process only appends: a rotated segment's lock is released at once and
    ``close`` releases the last one, so the directory's writer process finishes and deletes them.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        fsync: bool = False,
        segment_bytes: int = 64 * 1024 * 1024,
        hand_over: bool = False,
    ) -> None:
        super().__init__(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.hand_over = hand_over
        self._counter = itertools.count()
        self._fd: int | None = None
        self._size = 0
        self.appended = 0
        self.appended_bytes = 0  # what the backlog gate counts between its measurements

    # -- writing (event loop thread) ----------------------------------------------------------

    def open(self) -> None:
        """Create the directory, claim dead processes' segments (thread mode), and start a segment of our own."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.hand_over:
            self.claim_orphans()
        self._start_segment()

    def _start_segment(self) -> None:
        name = f"{os.getpid()}-{time.time_ns()}-{next(self._counter)}{SUFFIX}"
        path = self.directory / name
        # Created under another name and renamed once locked: a reader must never see an unlocked
        # new segment, take it for a dead process's, and delete it while we start appending.
        creating = self.directory / f".{name}{_CREATING}"
        fd = os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(creating, path)
        with self._lock:
            for segment in self.segments:
                if segment.active and self.hand_over and segment.lock_fd is not None:
                    os.close(segment.lock_fd)  # let go: the writer process may finish and delete it now
                    segment.lock_fd = None
                segment.active = False
            self.segments.append(Segment(path, lock_fd=fd, active=True))
        self._fd = fd
        self._size = 0

    def append(self, line: bytes) -> None:
        """Append one record line (ending in a newline). Returns once the kernel has it."""
        if self._fd is None:
            raise RuntimeError("journal is not open")
        _write_all(self._fd, line, self._size)
        if self.fsync:
            os.fsync(self._fd)
        self.appended += 1
        self.appended_bytes += len(line)
        self._size += len(line)
        if self._size >= self.segment_bytes:
            self._start_segment()  # thread mode: the old one stays locked until stored and deleted

    def own_sizes(self) -> dict[str, int]:
        """Name and current size of each segment this process wrote that still exists (hand-over mode)."""
        sizes: dict[str, int] = {}
        with self._lock:
            segments = list(self.segments)
        for segment in segments:
            try:
                sizes[segment.path.name] = segment.path.stat().st_size
            except FileNotFoundError:
                if not segment.active:
                    with self._lock:
                        self.segments.remove(segment)  # the writer process stored and deleted it
        return sizes

    # -- recovery (thread mode) -------------------------------------------------------------------

    def claim_orphans(self) -> int:
        """Take over segments whose process is gone (their lock is free); returns how many."""
        owned = {segment.path for segment in self.segments}
        claimed = 0
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path in owned:
                continue
            fd = _try_lock(path)
            if fd is None:
                continue  # a live process owns it, or it is gone
            with self._lock:
                # Older data first: orphans go before our own active segment.
                self.segments.insert(len([s for s in self.segments if not s.active]), Segment(path, lock_fd=fd))
            claimed += 1
        if claimed:
            log.info("replaying %d journal segment(s) left by a stopped process", claimed)
        return claimed

    def close(self) -> None:
        """Release every segment; fully stored ones are deleted (thread mode), the rest stay for a writer."""
        with self._lock:
            segments = list(self.segments)
        for segment in segments:
            size = segment.path.stat().st_size if segment.path.exists() else 0
            if segment.offset >= size and not self.hand_over:
                self._drop(segment)
            elif segment.lock_fd is not None:
                os.close(segment.lock_fd)
                segment.lock_fd = None
            segment.active = False
        self._fd = None


class JournalReader(SegmentSet):
    """Every segment in a journal directory, for the directory's one writer process.

    A segment whose ``flock`` another process holds is live: it is read up to its last complete
    line. Once the lock is free (rotated, closed, or its process died) the reader takes the lock,
    reads to the end (dropping a torn last line) and deletes the file when all of it is stored.
    ``offsets`` are where a previous writer process got to, so a restarted one resumes there.
    """

    def __init__(self, directory: str | Path, offsets: dict[str, int] | None = None) -> None:
        super().__init__(directory)
        self._resume = dict(offsets or {})

    def claim_orphans(self) -> int:
        """Find new segments and lock those nobody appends to any more; returns how many were locked."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            known = {segment.path: segment for segment in self.segments}
        on_disk = sorted(self.directory.glob(f"*{SUFFIX}"))
        locked = 0
        for path in on_disk:
            segment = known.get(path)
            if segment is None:
                segment = Segment(path, offset=self._resume.pop(path.name, 0), active=True)
                with self._lock:
                    self.segments.append(segment)
            if segment.active:
                fd = _try_lock(path)
                if fd is not None:
                    segment.lock_fd = fd
                    segment.active = False
                    locked += 1
        present = set(on_disk)
        for segment in [s for s in known.values() if s.path not in present and not s.path.exists()]:
            self._drop(segment)  # deleted by someone else (a thread-mode gateway)
        for path in self.directory.glob(f".*{_CREATING}"):
            fd = _try_lock(path)  # unlocked: its creator died before the rename; it holds nothing
            if fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                os.close(fd)
        return locked

    def live_count(self) -> int:
        """Segments some process still appends to (each live gateway process has one)."""
        with self._lock:
            return sum(1 for segment in self.segments if segment.active)

    def offsets(self) -> dict[str, int]:
        """How far each known segment is stored, by file name."""
        with self._lock:
            return {segment.path.name: segment.offset for segment in self.segments}

    def close(self) -> None:
        """Release the locks held; files stay for the next writer."""
        with self._lock:
            segments = list(self.segments)
        for segment in segments:
            if segment.lock_fd is not None:
                os.close(segment.lock_fd)
                segment.lock_fd = None


def _write_all(fd: int, line: bytes, size_before: int) -> None:
    """Write all of ``line`` at the end of ``fd``, or none of it.

    ``os.write`` may write less than asked (Linux writes at most 2 GiB per call; a full disk can stop
    it part-way): an unchecked short write lost the record's tail silently. On an error part-way the
    file is cut back to ``size_before``, so the torn line cannot glue itself to the next record and
    take it down too (readers read only complete lines, so they never saw the torn part).
    """
    view = memoryview(line)
    written = 0
    try:
        while written < len(view):
            n = os.write(fd, view[written:])
            if n <= 0:
                raise OSError(f"journal write made no progress after {written} of {len(view)} bytes")
            written += n
    except BaseException:
        if written:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size_before)
        raise
