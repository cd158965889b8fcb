"""The record writer as its own process: one per journal directory, shared by every gateway worker.

Why a process: a writer thread parses lines and runs SQL in the gateway's interpreter, so it
competes with the event loop for the GIL, and that showed in the gateway's p99. In its own process
it only competes for a core, as a `SCHED_IDLE` thread, and the event loop never waits for it.

The handover, all through files in the journal directory:

- ``writer.lock``: the writer holds an exclusive ``flock`` for its whole life and writes its pid
  there. Exactly one writer runs per directory; a second one started by a racing worker finds the
  lock taken and exits at once.
- ``*.jsonl``: the gateways' segments. A gateway holds the ``flock`` of the segment it appends to
  and lets go when it rotates or stops (or dies). The writer reads live segments up to their last
  complete line, and takes a released one's lock to finish and delete it (``JournalReader``).
- ``writer-status.json``: written (atomically) after every stored batch and at least every
  ``HEARTBEAT`` seconds: health, last error, counts, and how far each segment is stored. Gateways
  read it for ``/readyz``, metrics and ``flush()``; a restarted writer resumes from its offsets
  (at most one batch is replayed, and replays store nothing twice).

Each gateway process runs a ``WriterProcess``: it starts the writer if none holds the lock, and
checks every ``SUPERVISE_INTERVAL`` seconds, so a writer killed with ``-9`` is back within about a
second. The writer stops by itself once no gateway appends to the directory any more and
everything is stored (or the store is down: the files wait for the next start). A thread of its own
decides that, since the loop may be blocked on the store for as long as the store's timeouts allow
(a hung connection: for good): a writer with no gateway left, or asked to stop, that stores nothing
for ``GIVE_UP`` seconds writes its status and exits, and the journal waits for the next writer.

This module's top level imports only the standard library: a writer that loses the race for the
lock exits before paying for pydantic and the store drivers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from opsgate.domain.config import RecordConfig
    from opsgate.store.journal import Journal, JournalReader
    from opsgate.store.writer import RecordWriter

log = logging.getLogger("opsgate.store.writer_process")

LOCK_NAME = "writer.lock"
STATUS_NAME = "writer-status.json"
HEARTBEAT = 0.5  # seconds between status writes while nothing is stored
SUPERVISE_INTERVAL = 0.5  # how often a gateway checks that the writer is alive
IDLE_EXIT = 2.0  # seconds with no live segment before the writer stops
GIVE_UP = 30.0  # seconds an orphaned or stopping writer may store nothing before it exits anyway
WATCH_INTERVAL = 0.25  # how often the writer checks whether a gateway still appends here
SPAWN_GRACE_SECONDS = 10.0  # a writer started this recently and still running is not started again


def read_status(directory: Path) -> dict[str, Any] | None:
    """The writer's last status file, or None if there is none (yet)."""
    try:
        data: dict[str, Any] = json.loads((directory / STATUS_NAME).read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return data


def write_status(directory: Path, status: dict[str, Any]) -> None:
    """Replace the status file atomically, so readers never see half of it."""
    tmp = directory / f".{STATUS_NAME}.tmp"
    tmp.write_text(json.dumps(status))
    os.replace(tmp, directory / STATUS_NAME)


# -- the writer process ------------------------------------------------------------------------------


def _take_lock(directory: Path) -> int | None:
    """The writer lock's fd, or None if another writer holds it (a few tries: a gateway may be probing)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    for _ in range(10):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd
    os.close(fd)
    return None


def gateways_appending(directory: Path, ours: set[Path]) -> bool:
    """Whether another process holds the lock of a segment (not one of ``ours``): a gateway appending here.

    Probed with a shared lock on a fresh fd, released at once. A segment the writer's loop locks
    meanwhile reads as held for one probe, which only postpones the decision by a probe.
    """
    for path in directory.glob("*.jsonl"):
        if path in ours:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # drops the probe's lock too
    return False


class WriterLifetime:
    """When the writer process stops, decided from a thread of its own.

    The writer's loop can be blocked on the store for as long as the store's timeouts allow (a
    pool waiting 10 s per open, an INSERT on a connection whose server stopped answering: for
    good), so it cannot be the one to notice that its gateways are gone. With no gateway appending
    for ``IDLE_EXIT`` seconds the writer is asked to stop once all is stored or the store is down
    (it stores what it still can, then returns). Orphaned or asked to stop (SIGTERM), a writer that
    stores nothing for ``give_up`` seconds gives up: it writes its status and exits, holding
    nothing; the journal is on disk and the next writer resumes from the status file's offsets.
    """

    def __init__(self, directory: Path, reader: JournalReader, writer: RecordWriter, give_up: float) -> None:
        self.directory = directory
        self.reader = reader
        self.writer = writer
        self.give_up = give_up
        self.orphan_since: float | None = None
        self.stop_requested_at: float | None = None
        self._seen_write_at: float | None = None
        self._progress_at = time.monotonic()

    def request_stop(self, now: float | None = None) -> None:
        """Ask the loop to store what it can and return (SIGTERM, or no gateway left)."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic() if now is None else now
        self.writer.request_stop()

    def check(self, now: float) -> str | None:
        """One look: ask for a stop if due; the reason to give up now, or None."""
        if self.writer.last_write_at != self._seen_write_at:
            self._seen_write_at, self._progress_at = self.writer.last_write_at, now  # a batch was stored
        ours = {segment.path for segment in list(self.reader.segments) if segment.lock_fd is not None}
        if gateways_appending(self.directory, ours):
            self.orphan_since = None
        elif self.orphan_since is None:
            self.orphan_since = now
        orphaned = self.orphan_since is not None and now - self.orphan_since >= IDLE_EXIT
        stopping = self.stop_requested_at is not None
        if orphaned and not stopping and (not self.writer.healthy or self.reader.pending_bytes() == 0):
            self.request_stop(now)  # all stored, or the store is down: the files wait for the next start
        since = self.stop_requested_at if self.stop_requested_at is not None else self.orphan_since
        if since is None or not (orphaned or stopping) or now - max(since, self._progress_at) < self.give_up:
            return None
        why = "asked to stop" if self.orphan_since is None else "no gateway appends to the journal"
        return f"gave up after storing nothing for {self.give_up:.0f} s ({why}): the journal waits for the next writer"

    def watch(self, give_up: Callable[[str], None]) -> None:
        """The thread's body: look every ``WATCH_INTERVAL`` seconds; ``give_up`` does not return."""
        while True:
            time.sleep(WATCH_INTERVAL)
            reason = self.check(time.monotonic())
            if reason is not None:
                give_up(reason)


def run_writer(settings: dict[str, Any]) -> int:
    """The writer process's body: take the lock, store the directory's journal until no gateway is left."""
    directory = Path(settings["journal_dir"])
    lock_fd = _take_lock(directory)
    if lock_fd is None:
        return 0  # another writer serves this directory

    from opsgate.domain.config import RetentionConfig
    from opsgate.store.journal import JournalReader
    from opsgate.store.record_log import open_store
    from opsgate.store.writer import RecordWriter

    previous = read_status(directory) or {}
    reader = JournalReader(directory, offsets=previous.get("offsets") or {})
    retention = settings.get("retention")
    started = time.time()
    state: dict[str, Any] = {"offsets": None, "at": 0.0}
    publishing = threading.Lock()  # the loop and the lifetime thread both write the status file

    def publish(force: bool = False, gave_up: str | None = None) -> None:
        offsets = reader.offsets()
        now = time.monotonic()
        if not force and offsets == state["offsets"] and now - state["at"] < HEARTBEAT:
            return
        state["offsets"], state["at"] = offsets, now
        status = {
            "pid": os.getpid(),
            "started_at": started,
            "updated_at": time.time(),
            **writer.status(),
            "live_segments": reader.live_count(),
            "settings": settings.get("fingerprint"),
            "offsets": offsets,
        }
        if gave_up is not None:
            status |= {"healthy": False, "last_error": gave_up}
        write_status(directory, status)

    def cycle() -> None:
        with publishing:
            publish()

    def give_up(reason: str) -> None:
        # The loop may be inside the store: no clean-up that could wait on it. Offsets only cover
        # stored batches, and a replayed batch stores nothing twice, so exiting here loses nothing.
        log.warning("record writer %d %s", os.getpid(), reason)
        with publishing:  # held until exit: the loop writes no status after this one
            publish(force=True, gave_up=reason)
            os._exit(0)

    writer = RecordWriter(
        reader,
        lambda: open_store(settings["store"]),
        batch_size=int(settings["batch_size"]),
        batch_bytes=int(settings.get("batch_bytes", 16 * 1024 * 1024)),
        flush_interval=float(settings["flush_interval"]),
        retention=RetentionConfig.model_validate(retention) if retention is not None else None,
        claim_interval=0.0,  # look for new and released segments every turn: a glob and a few flocks
        catch_up_bytes=int(settings.get("catch_up_bytes", 64 * 1024 * 1024)),
        on_cycle=cycle,
    )
    lifetime = WriterLifetime(directory, reader, writer, float(settings.get("give_up", GIVE_UP)))
    signal.signal(signal.SIGTERM, lambda *_: lifetime.request_stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the gateways; their release stops us
    # Started before the loop drops to idle priority (per thread), so it keeps normal priority.
    threading.Thread(target=lifetime.watch, args=(give_up,), name="opsgate-writer-lifetime", daemon=True).start()
    log.info("record writer %d serving %s", os.getpid(), directory)
    try:
        writer.run()
    finally:
        reader.delete_finished()
        with publishing:
            publish(force=True)
        if writer.store is not None:
            writer.store.close()
        reader.close()
        os.close(lock_fd)
    return 0


def main() -> int:
    """Entry point: settings as one JSON object on stdin (the store URL may hold a password)."""
    settings = json.loads(sys.stdin.buffer.read())
    logging.basicConfig(
        level=int(settings.get("log_level", logging.WARNING)),
        format="%(asctime)s %(levelname)s opsgate-writer[%(process)d] %(name)s: %(message)s",
    )
    return run_writer(settings)


# -- the gateway's side ------------------------------------------------------------------------------


class WriterProcess:
    """A gateway process's handle on its journal directory's writer process.

    Starts it when no writer holds the lock, restarts it if it dies, and answers ``status()`` and
    ``flush()`` from the writer's status file. Several gateway workers may each hold one; they share
    the one writer.
    """

    def __init__(self, journal: Journal, config: RecordConfig) -> None:
        self.journal = journal
        self.directory = journal.directory.absolute()
        self.settings: dict[str, Any] = {
            "journal_dir": str(self.directory),
            "store": config.store,
            "batch_size": config.batch_size,
            "batch_bytes": config.batch_max_mb * 1024 * 1024,
            "flush_interval": config.flush_interval_ms / 1000.0,
            "catch_up_bytes": config.catch_up_mb * 1024 * 1024,
            "retention": config.retention.model_dump(mode="json"),
            "log_level": logging.getLogger("opsgate").getEffectiveLevel(),
            "give_up": GIVE_UP,
        }
        # A writer started with other settings (the store URL changed across a restart) is asked to
        # stop, so the next one is started with ours.
        self.settings["fingerprint"] = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()
        self._asked_to_stop: set[int] = set()
        self.spawned = 0
        self._children: list[subprocess.Popen[bytes]] = []
        self._spawned_at = 0.0  # monotonic: when the last writer was started
        self._probe_fd: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="opsgate-writer-supervisor", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer if none runs, and keep checking (the journal must be open already)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._probe_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        self.ensure_running()
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop supervising and wait (bounded) for the writer to store and delete our segments.

        Call after the journal is closed (our locks released). A writer that reports the store down
        is not waited for: the records stay in the journal for it or for the next start. One we
        started that has not taken the lock yet is (it used to read as "none running").
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self.journal.own_sizes() and time.monotonic() < deadline:
            if self.alive():
                if self._store_down():
                    break
            elif not any(child.poll() is None for child in self._children):
                break
            time.sleep(0.02)
        for child in self._children:
            if child.poll() is None:
                # A running writer outlives us on purpose (it finishes the directory); reap it when it
                # exits so a long-lived host process (tests, embedding) collects no zombies.
                threading.Thread(target=child.wait, name="opsgate-writer-reaper", daemon=True).start()
        self._children = []
        if self._probe_fd is not None:
            os.close(self._probe_fd)
            self._probe_fd = None

    def _store_down(self) -> bool:
        """Whether the running writer reports a store failure (not merely a store it has not opened yet)."""
        status = read_status(self.directory) or {}
        return (
            status.get("pid") == self._writer_pid()
            and status.get("healthy") is False
            and bool(status.get("last_error"))
        )

    def alive(self) -> bool:
        """Whether a writer process holds the directory's lock."""
        if self._probe_fd is None:
            return False
        try:
            fcntl.flock(self._probe_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._probe_fd, fcntl.LOCK_UN)
        return False

    def ensure_running(self) -> bool:
        """Start a writer if none holds the lock; True if this call started one."""
        self._children = [child for child in self._children if child.poll() is None]
        if self.alive():
            self._replace_if_outdated()
            return False
        if self._children and time.monotonic() - self._spawned_at < SPAWN_GRACE_SECONDS:
            # One we started is still starting (on a loaded machine, seconds before it takes the lock): a second
            # would only lose the race for the lock and exit.
            return False
        child = subprocess.Popen(
            [sys.executable, "-m", "opsgate.store.writer_process"],
            stdin=subprocess.PIPE,
            cwd=os.getcwd(),  # a relative sqlite:/// URL means the same file for both
            start_new_session=True,  # a Ctrl-C or kill of the gateway's process group leaves it to finish
        )
        assert child.stdin is not None
        child.stdin.write(json.dumps(self.settings).encode())
        child.stdin.close()
        self._children.append(child)
        self._spawned_at = time.monotonic()
        if self.spawned:
            log.warning("record writer process was not running; started a new one (pid %d)", child.pid)
        self.spawned += 1
        return True

    def _replace_if_outdated(self) -> None:
        status = read_status(self.directory) or {}
        pid = self._writer_pid()
        if pid is None or status.get("pid") != pid or status.get("settings") in (None, self.settings["fingerprint"]):
            return
        if pid not in self._asked_to_stop:
            self._asked_to_stop.add(pid)
            log.warning("record writer %d runs with other settings (store, batch, retention); replacing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # it stores what it can and exits; the next check starts ours

    def _supervise(self) -> None:
        while not self._stop.wait(SUPERVISE_INTERVAL):
            try:
                self.ensure_running()
            except OSError as error:
                log.error("cannot start the record writer process: %s", error)

    # -- what the gateway asks ------------------------------------------------------------------------

    def _writer_pid(self) -> int | None:
        try:
            return int((self.directory / LOCK_NAME).read_text() or 0) or None
        except (FileNotFoundError, ValueError):
            return None

    def status(self) -> dict[str, Any]:
        """Health and backlog for ``/readyz`` and metrics: the writer's report, checked against its lock."""
        status = read_status(self.directory) or {}
        alive = self.alive()
        current = alive and status.get("pid") == self._writer_pid()
        pending, segments = self._backlog(status)
        if not alive:
            error: str | None = "the record writer process is not running (restarting it)"
        elif not current:
            error = "the record writer process is starting"
        else:
            error = status.get("last_error")
        return {
            "writer": "process",
            "writer_pid": self._writer_pid() if alive else None,
            "healthy": bool(current and status.get("healthy")),
            "last_error": error,
            "written": status.get("written", 0) if current else 0,
            "pending_bytes": pending,
            "segments": segments,
            "last_write_at": status.get("last_write_at"),
            "expired_deleted": status.get("expired_deleted", 0) if current else 0,
            "catching_up": bool(current and status.get("catching_up")),
            "rejected": status.get("rejected", 0) if current else 0,
            "last_rejected_error": status.get("last_rejected_error"),
            "writer_starts": self.spawned,
        }

    def pending_bytes(self) -> int:
        """Bytes journaled in the directory (by every gateway process) that the writer has not stored yet."""
        return self._backlog(read_status(self.directory) or {})[0]

    def _backlog(self, status: dict[str, Any]) -> tuple[int, int]:
        """Pending bytes and segment count, from the segments' sizes and the writer's stored offsets."""
        offsets: dict[str, int] = status.get("offsets") or {}
        pending = 0
        segments = 0
        for path in self.directory.glob("*.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                pending += max(0, path.stat().st_size - offsets.get(path.name, 0))
                segments += 1
        return pending, segments

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything journaled in the directory so far is stored (tests, erasure, feedback)."""
        sizes: dict[str, int] = {}
        for path in self.directory.glob("*.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                sizes[path.name] = path.stat().st_size
        deadline = time.monotonic() + timeout
        while True:
            offsets = (read_status(self.directory) or {}).get("offsets") or {}
            waiting = {
                name: size
                for name, size in sizes.items()
                if offsets.get(name, -1) < size and (self.directory / name).exists()
            }
            if not waiting:
                return True
            if time.monotonic() >= deadline:
                return False
            sizes = waiting
            time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main())
