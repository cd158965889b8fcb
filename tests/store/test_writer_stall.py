"""An idle-priority writer on a machine whose cores are all busy: the watchdog bounds how long records wait."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsgate.domain.config import RecordConfig
from opsgate.store.query import RecordQuery
from opsgate.store.record_log import RecordLog
from opsgate.store.writer import RecordWriter
from tests.store.test_record_log import sample

BURN = "import sys; sys.stdout.write('spinning'); sys.stdout.flush()\nwhile True: pass"


@pytest.fixture()
def busy_cores() -> Iterator[None]:
    """Two normal-priority spinning processes per core: the writer's SCHED_IDLE thread gets ~nothing.

    With one per core, the kernel here (EEVDF, 6.x) still gave an idle-policy thread ~2% of a core, and
    a fast machine stores a 6 MB record with that in under ``stall_seconds``: never starved, never
    raised. With two per core it got ~0.3%. Yields only once every burner spins: on a loaded machine an
    interpreter takes seconds to start, and a writer that stored its records before the burners ran was
    never starved either (both failed loaded suite runs: the watchdog never had to act).
    """
    burners = [
        subprocess.Popen([sys.executable, "-c", BURN], stdout=subprocess.PIPE) for _ in range(2 * (os.cpu_count() or 2))
    ]
    try:
        for burner in burners:
            assert burner.stdout is not None
            ready, _, _ = select.select([burner.stdout], [], [], 120)
            assert ready and burner.stdout.read(8) == b"spinning", "a CPU burner did not start"
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def test_a_starved_writer_is_raised_and_stores_a_multi_megabyte_record(
    tmp_path: Path, busy_cores: None, caplog: pytest.LogCaptureFixture
) -> None:
    config = RecordConfig(store=f"sqlite:///{tmp_path}/r.db", journal_dir=str(tmp_path / "journal"))
    log = RecordLog(config)
    assert isinstance(log.writer, RecordWriter)
    log.writer.stall_seconds = 1.0
    caplog.set_level("INFO", logger="opsgate.store.writer")
    log.start()
    try:
        for n in range(3):
            record = sample(f"big-{n}", "x")
            record["input"] = "z" * 3_000_000  # ~6 MB journaled per record: seconds of work at idle priority
            log.write(record)
        log.write(sample("small", "x"))
        started = time.monotonic()
        assert log.writer.flush(timeout=120), log.status()
        waited = time.monotonic() - started
        assert {r["id"] for r in log.search(RecordQuery(limit=10))[0]} == {"big-0", "big-1", "big-2", "small"}
        assert waited < 30, f"records waited {waited:.1f} s (the starved writer took 79 s without the watchdog)"
        # Whether the kernel starved the writer long enough for the watchdog to act depends on the
        # machine (a whole-suite run once gave it enough CPU without): the watchdog's raise itself is
        # tested deterministically below.
        tid = log.writer._thread.native_id
        assert tid is not None
        # Caught up: back at idle priority, so requests come first again.
        assert os.sched_getscheduler(tid) == os.SCHED_IDLE and not log.writer.catching_up
    finally:
        log.stop()


def test_the_watchdog_raises_a_writer_that_makes_no_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Deterministic, whatever the load: a batch that makes no progress until its own thread runs at
    # normal priority again. The watchdog must notice (no batch stored for stall_seconds, records
    # waiting), raise the writer and say so; once caught up the writer is back at idle priority.
    config = RecordConfig(store=f"sqlite:///{tmp_path}/r.db", journal_dir=str(tmp_path / "journal"))
    log = RecordLog(config)
    writer = log.writer
    assert isinstance(writer, RecordWriter)
    writer.stall_seconds = 0.5
    caplog.set_level("INFO", logger="opsgate.store.writer")
    log.start()
    try:
        deadline = time.monotonic() + 60
        while writer.store is None or not writer.healthy:
            assert time.monotonic() < deadline, log.status()
            time.sleep(0.05)
        store = writer.store
        assert store is not None
        original = store.write_lines
        seen: list[int] = []

        def stuck_until_raised(lines: list[bytes]) -> int:
            tid = threading.get_native_id()
            until = time.monotonic() + 60
            while os.sched_getscheduler(tid) == os.SCHED_IDLE and time.monotonic() < until:
                time.sleep(0.02)
            seen.append(os.sched_getscheduler(tid))
            return original(lines)

        store.write_lines = stuck_until_raised  # type: ignore[method-assign]
        log.write(sample("stuck", "x"))
        assert writer.flush(timeout=120), log.status()
        assert seen and seen[0] == os.SCHED_OTHER, seen  # raised by the watchdog, not timed out
        assert any("competes for CPU" in r.getMessage() for r in caplog.records), [
            r.getMessage() for r in caplog.records
        ]
        tid = writer._thread.native_id
        assert tid is not None
        deadline = time.monotonic() + 30
        while os.sched_getscheduler(tid) != os.SCHED_IDLE or writer.catching_up:
            assert time.monotonic() < deadline, "the writer stayed raised after catching up"
            time.sleep(0.05)
    finally:
        log.stop()
