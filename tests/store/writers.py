"""Writer processes seen from a test: they run in their own session, so a test must stop its own.

A writer outlives the gateway that started it on purpose (it finishes the journal), and one spawned by
the test process itself writes its log to the test run's stderr: left running, it is read as part of
whichever test runs next.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def writer_processes(under: Path) -> set[int]:
    """Writer processes with a file open under ``under`` (their journal's lock or segments)."""
    prefix = str(under.absolute()) + os.sep
    found: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if b"opsgate.store.writer_process" not in (proc / "cmdline").read_bytes():
                continue
            if any(os.readlink(fd).startswith(prefix) for fd in (proc / "fd").iterdir()):
                found.add(int(proc.name))
    return found


def gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` exits (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_writers(under: Path, timeout: float = 30.0) -> set[int]:
    """Ask every writer serving a journal under ``under`` to stop (SIGTERM), as a test's teardown.

    Returns the pids that did not stop within ``timeout`` and were killed (a bug the caller reports).
    """
    pids = writer_processes(under)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    killed: set[int] = set()
    for pid in pids:
        if not gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
    return killed
