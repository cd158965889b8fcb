"""An append-only, segmented journal: every record lands here before the client gets its answer.

A record is one JSON line written with ``os.write`` straight to the file, so once ``append``
returns it is in the kernel and survives ``kill -9`` of the gateway (``fsync=True`` makes it
survive power loss too, at a cost per request). The writer thread reads segments back and stores
them; a fully stored segment is deleted. Each process writes its own segments and holds an
``flock`` on the active one, so after a crash another process (or the restarted one) can tell a
dead process's segments from a live one's and replay them.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("opsgate.store.journal")

SUFFIX = ".jsonl"


@dataclass
class Segment:
    """One journal file, and how far the writer has read and stored it."""

    path: Path
    offset: int = 0
    lock_fd: int | None = None  # held while this process owns the segment
    active: bool = False
    partial: bytes = field(default=b"", repr=False)


class Journal:
    """This process's journal segments in ``directory``."""

    def __init__(self, directory: str | Path, *, fsync: bool = False, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._counter = itertools.count()
        self._fd: int | None = None
        self._size = 0
        self.segments: list[Segment] = []
        self.appended = 0
        self._lock = threading.Lock()  # the segment list is shared by the event loop and the writer thread

    # -- writing (event loop thread) ----------------------------------------------------------

    def open(self) -> None:
        """Create the directory, claim dead processes' segments, and start a segment of our own."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.claim_orphans()
        self._start_segment()

    def _start_segment(self) -> None:
        name = f"{os.getpid()}-{time.time_ns()}-{next(self._counter)}{SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with self._lock:
            for segment in self.segments:
                segment.active = False
            self.segments.append(Segment(path, lock_fd=fd, active=True))
        self._fd = fd
        self._size = 0

    def append(self, line: bytes) -> None:
        """Append one record line (ending in a newline). Returns once the kernel has it."""
        if self._fd is None:
            raise RuntimeError("journal is not open")
        os.write(self._fd, line)
        if self.fsync:
            os.fsync(self._fd)
        self.appended += 1
        self._size += len(line)
        if self._size >= self.segment_bytes:
            self._start_segment()  # the old one stays locked until stored and deleted

    # -- recovery -------------------------------------------------------------------------------

    def claim_orphans(self) -> int:
        """Take over segments whose process is gone (their lock is free); returns how many."""
        owned = {segment.path for segment in self.segments}
        claimed = 0
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path in owned:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # another process stored and deleted it meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live process owns it
                continue
            if not path.exists():
                os.close(fd)
                continue
            with self._lock:
                # Older data first: orphans go before our own active segment.
                self.segments.insert(len([s for s in self.segments if not s.active]), Segment(path, lock_fd=fd))
            claimed += 1
        if claimed:
            log.info("replaying %d journal segment(s) left by a stopped process", claimed)
        return claimed

    # -- reading (writer thread) ----------------------------------------------------------------

    def read_batch(self, limit: int) -> list[tuple[Segment, int, bytes]]:
        """Up to ``limit`` complete lines not yet stored, as (segment, offset after line, line)."""
        out: list[tuple[Segment, int, bytes]] = []
        with self._lock:
            segments = list(self.segments)
        for segment in segments:
            if len(out) >= limit:
                break
            try:
                with open(segment.path, "rb") as handle:
                    handle.seek(segment.offset)
                    data = handle.read(max(1 << 20, 2048 * (limit - len(out))))
            except FileNotFoundError:
                continue
            position = segment.offset
            start = 0
            while len(out) < limit:
                end = data.find(b"\n", start)
                if end < 0:
                    break
                position += end + 1 - start
                out.append((segment, position, data[start:end]))
                start = end + 1
        return out

    def mark_stored(self, segment: Segment, offset: int) -> None:
        """Everything up to ``offset`` of ``segment`` is in storage."""
        segment.offset = max(segment.offset, offset)

    def delete_finished(self) -> int:
        """Delete inactive segments that are fully stored; returns how many."""
        removed = 0
        with self._lock:
            segments = list(self.segments)
        for segment in segments:
            if segment.active:
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
            self.segments.remove(segment)

    def pending_bytes(self) -> int:
        """Bytes written to this process's segments but not yet stored."""
        total = 0
        with self._lock:
            segments = list(self.segments)
        for segment in segments:
            try:
                total += max(0, segment.path.stat().st_size - segment.offset)
            except FileNotFoundError:
                continue
        return total

    def close(self) -> None:
        """Release every segment; fully stored ones are deleted, the rest stay for the next start."""
        with self._lock:
            segments = list(self.segments)
        for segment in segments:
            size = segment.path.stat().st_size if segment.path.exists() else 0
            if segment.offset >= size:
                self._drop(segment)
            elif segment.lock_fd is not None:
                os.close(segment.lock_fd)
                segment.lock_fd = None
        self._fd = None
