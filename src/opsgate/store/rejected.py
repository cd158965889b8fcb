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

import contextlib
import fcntl
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from opsgate.store.sql import SqlRecordStore

REJECTED_NAME = "rejected.jsonl.txt"


def store_down(error: Exception) -> bool:
    """Whether an error says the store is unreachable (retry later) rather than refusing some data."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"OperationalError", "PoolTimeout", "InterfaceError", "OSError", "TimeoutError"})


def refused_data(error: Exception) -> bool:
    """Whether an error says the store refuses this line's data rather than being broken.

    ``DataError``/``IntegrityError`` (psycopg and sqlite3), and ``ValueError`` (a line that is not
    JSON, bytes that are not UTF-8): the line's fault, whatever the rest of the batch does.
    """
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"DataError", "IntegrityError", "ValueError"}) and not store_down(error)


def append_rejected(directory: Path, items: Iterable[dict[str, Any]]) -> Path:
    """Append refused lines (``{"error", "at", "line"}``) to the directory's rejected file."""
    path = directory / REJECTED_NAME
    data = b"".join(orjson.dumps(item, default=str) + b"\n" for item in items)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


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
            lines = [line for line in self.path.read_bytes().split(b"\n") if line.strip()]
            last: dict[str, Any] = {}
            if lines:
                with contextlib.suppress(orjson.JSONDecodeError):
                    parsed = orjson.loads(lines[-1])
                    last = parsed if isinstance(parsed, dict) else {}
            self._summary = {"pending": len(lines), "last_error": last.get("error"), "last_at": last.get("at")}
        return dict(self._summary)


def replay_rejected(directory: Path, store: SqlRecordStore) -> dict[str, int]:
    """Feed every set-aside line to ``store`` again, one at a time; keep those that still fail.

    Returns ``stored`` (new rows), ``duplicates`` (already stored: nothing to do), ``still_rejected``
    and ``unreadable`` (entries that are not a set-aside line at all; kept too).
    """
    path = directory / REJECTED_NAME
    counts = {"stored": 0, "duplicates": 0, "still_rejected": 0, "unreadable": 0}
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return counts
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the writer waits to append while we replay
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
                if store_down(error):
                    # The store is down: keep this line and every one after it, as they were.
                    kept.extend(entries[index:])
                    counts["still_rejected"] += len(entries) - index
                    break
                counts["still_rejected"] += 1
                kept.append(orjson.dumps({**item, "error": f"{type(error).__name__}: {error}", "at": time.time()}))
                continue
            counts["stored" if inserted else "duplicates"] += 1
        # Rewritten in place under the lock (never unlinked: a writer waiting for the lock holds
        # this file open and appends to it next).
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"".join(entry + b"\n" for entry in kept), 0)
    finally:
        os.close(fd)
    return counts
