"""Journal lines a store refused, set aside so they cannot block the journal, and fed back on demand.

The writer appends each refused line to ``rejected.jsonl.txt`` in the journal directory as
``{"error", "at", "line"}``. Nothing there is lost or forgotten: ``/readyz`` shows how many wait
and the last reason (and says ``degraded`` while any do), ``/metrics`` counts them, and
``opsgate logs replay-rejected`` feeds them to the store again once an operator has fixed the
cause. Lines that still fail stay in the file with their new error; lines stored meanwhile (or
already stored: inserts skip known ids) leave it.

Both sides take an ``flock`` on the file, so a replay never loses a line the writer appends while
it runs.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from opsgate.store.failures import store_down
from opsgate.store.sql import SqlRecordStore

REJECTED_NAME = "rejected.jsonl.txt"
MAX_ERROR_CHARS = 1000  # PostgreSQL's message can quote the whole failing row; the line itself is kept
_HEAD_BYTES = 16 * 1024
_HEAD = re.compile(rb'\{"error":("(?:[^"\\]|\\.)*")(?:,"at":([-0-9.eE+]+))?')


def append_rejected(directory: Path, items: Iterable[dict[str, Any]]) -> Path:
    """Append refused lines (``{"error", "at", "line"}``) to the directory's rejected file."""
    path = directory / REJECTED_NAME
    # Error and time first: /readyz reads them from the head of the last line without reading it all.
    data = b"".join(
        orjson.dumps(
            {"error": str(item["error"])[:MAX_ERROR_CHARS], "at": float(item["at"]), "line": str(item["line"])}
        )
        + b"\n"
        for item in items
    )
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A replay replaces the file while holding its lock: append to the file now at ``path``.
            if _same_file(fd, path):
                os.write(fd, data)
                return path
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), path.stat())
    except FileNotFoundError:
        return False


class RejectedLines:
    """How many refused lines wait in a journal directory, and why the last one was refused.

    Read for every ``/readyz`` and scrape, so the file is parsed only when its size or mtime changed.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / REJECTED_NAME
        self._seen: tuple[int, int] | None = None
        self._summary: dict[str, Any] = {"pending": 0, "last_error": None, "last_at": None}

    def summary(self) -> dict[str, Any]:
        """``pending`` (lines waiting for a replay), ``last_error`` and ``last_at`` (the newest one's)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen = None
            return {"pending": 0, "last_error": None, "last_at": None}
        key = (stat.st_size, stat.st_mtime_ns)
        if key != self._seen:
            self._seen = key
            self._summary = _summarise(self.path)
        return dict(self._summary)


def _summarise(path: Path) -> dict[str, Any]:
    """Count the file's lines and read the last one's reason, in bounded memory (lines can be MBs)."""
    pending, position = 0, 0
    last_newline = before_last = -1  # file offsets of the last two newlines seen
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            found = chunk.count(b"\n")
            if found:
                pending += found
                end = chunk.rfind(b"\n")
                before = chunk.rfind(b"\n", 0, end) if found > 1 else -1
                before_last = position + before if before >= 0 else last_newline
                last_newline = position + end
            position += len(chunk)
        handle.seek(before_last + 1)
        head = handle.read(_HEAD_BYTES)
    # The error and time come first in each entry (append_rejected), so the head of the line holds them.
    match = _HEAD.match(head)
    if not pending or match is None:
        return {"pending": pending, "last_error": None, "last_at": None}
    error = orjson.loads(match.group(1))
    return {"pending": pending, "last_error": error, "last_at": float(match.group(2)) if match.group(2) else None}


def replay_rejected(directory: Path, store: SqlRecordStore) -> dict[str, int]:
    """Feed every set-aside line to ``store`` again, one at a time; keep those that still fail.

    Returns ``stored`` (new rows), ``duplicates`` (already stored: nothing to do), ``still_rejected``
    and ``unreadable`` (entries that are not a set-aside line at all; kept too).
    """
    path = directory / REJECTED_NAME
    counts = {"stored": 0, "duplicates": 0, "still_rejected": 0, "unreadable": 0}
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return counts
        fcntl.flock(fd, fcntl.LOCK_EX)  # the writer waits to append while we replay
        if _same_file(fd, path):
            break
        os.close(fd)  # another replay replaced it meanwhile: lock the file there now
    try:
        with os.fdopen(os.dup(fd), "rb") as handle:
            entries = [line for line in handle.read().split(b"\n") if line.strip()]
        kept: list[bytes] = []
        for index, entry in enumerate(entries):
            try:
                item = orjson.loads(entry)
                line = str(item["line"]).encode()
            except (orjson.JSONDecodeError, KeyError, TypeError):
                counts["unreadable"] += 1
                kept.append(entry)
                continue
            try:
                inserted = store.write_lines([line])
            except Exception as error:
                if store_down(store, error):
                    # The store is down: keep this line and every one after it, as they were.
                    kept.extend(entries[index:])
                    counts["still_rejected"] += len(entries) - index
                    break
                counts["still_rejected"] += 1
                reason = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
                kept.append(orjson.dumps({"error": reason, "at": time.time(), "line": item["line"]}))
                continue
            counts["stored" if inserted else "duplicates"] += 1
        # Written beside it and swapped in under the lock: a crash at any point leaves one whole
        # file. A writer waiting for the old file's lock sees it was replaced and appends to the new.
        fresh = path.with_name(f".{REJECTED_NAME}.{os.getpid()}.tmp")
        with open(fresh, "wb") as out:
            out.write(b"".join(entry + b"\n" for entry in kept))
            out.flush()
            os.fsync(out.fileno())
        os.replace(fresh, path)
    finally:
        os.close(fd)
    return counts
