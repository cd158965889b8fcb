"""Every acknowledged request survives ``kill -9`` of the gateway, of the writer process, of both, and a
store outage, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from opsgate.store.query import RecordQuery
from opsgate.store.record_log import open_store
from opsgate.store.writer_process import LOCK_NAME, read_status
from tests.fake_upstream import FakeUpstream
from tests.store.writers import gone, stop_writers
from tests.support import free_port
from tests.support import serve_process as gateway_process


@pytest.fixture(autouse=True)
def no_writer_left_behind(tmp_path: Path) -> Iterator[None]:
    """Stop the writer processes a test's gateways left: they outlive a gateway on purpose."""
    yield
    assert not stop_writers(tmp_path), "a writer process ignored SIGTERM and was killed"


def write_config(path: Path, upstream: FakeUpstream, store_url: str, writer: str = "process", workers: int = 1) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"workers": workers},
                "models": [
                    {"name": "up", "deployments": [{"type": "openai", "base_url": upstream.base_url, "model": "m"}]}
                ],
                "record": {
                    "store": store_url,
                    "journal_dir": str(path.parent / "journal"),
                    "batch_size": 200,
                    "writer": writer,
                },
            }
        )
    )
    return path


def writer_pid(journal: Path, timeout: float = 15) -> int:
    """The pid of the writer process that holds the journal's lock (waiting for one to start)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int((journal / LOCK_NAME).read_text())
            if Path(f"/proc/{pid}").exists() and (read_status(journal) or {}).get("pid") == pid:
                return pid
        assert time.monotonic() < deadline, "no writer process took the journal's lock"
        time.sleep(0.05)


def writers_holding(journal: Path) -> set[int]:
    """Writer processes with the journal's lock file open (a loser of a start race exits within 0.2 s)."""
    lock = str(journal / LOCK_NAME)
    found: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if b"opsgate.store.writer_process" not in (proc / "cmdline").read_bytes():
                continue
            if any(os.readlink(fd) == lock for fd in (proc / "fd").iterdir()):
                found.add(int(proc.name))
    return found


def load(url: str, stop: threading.Event, acked: list[str], workers: int = 6) -> list[threading.Thread]:
    def run(worker: int) -> None:
        with httpx.Client(timeout=5) as client:
            n = 0
            while not stop.is_set():
                rid = f"w{worker}-{n}"
                n += 1
                try:
                    response = client.post(
                        url + "/v1/chat/completions",
                        headers={"x-request-id": rid},
                        json={"model": "up", "messages": [{"role": "user", "content": rid}]},
                    )
                except httpx.TransportError:
                    return  # the gateway died under us: this request was not acknowledged
                if response.status_code == 200:
                    acked.append(rid)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    return threads


def stored_ids(store_url: str) -> set[str]:
    store = open_store(store_url)
    try:
        # The load sends its own X-Request-Id: records keep it as client_request_id (ids are the gateway's).
        return {r["client_request_id"] or r["id"] for r in store.iter_records(RecordQuery())}
    finally:
        store.close()


def wait_for_rows(store_url: str, expected: set[str], timeout: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        have = stored_ids(store_url)
        if expected <= have or time.monotonic() > deadline:
            return have
        time.sleep(0.2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_kill_9_under_load_loses_no_acknowledged_record(
    tmp_path: Path, upstream: FakeUpstream, store_url: str, writer: str
) -> None:
    config = write_config(tmp_path / "gw.yaml", upstream, store_url, writer)
    acked: list[str] = []
    with gateway_process(config) as (process, url):
        stop = threading.Event()
        threads = load(url, stop, acked)
        time.sleep(2.0)
        if writer == "process":
            os.kill(writer_pid(tmp_path / "journal"), signal.SIGKILL)  # both die: only the journal is left
        os.kill(process.pid, signal.SIGKILL)  # no shutdown hook runs: only the journal can save records
        process.wait(10)
        stop.set()
        for thread in threads:
            thread.join(10)
    assert len(acked) > 200, f"too little load to mean anything: {len(acked)} acknowledged"
    journal = tmp_path / "journal"
    assert any(journal.glob("*.jsonl")), "the killed process left no journal"
    # Restart: the new process replays the dead one's journal.
    with gateway_process(config) as (_, url):
        have = wait_for_rows(store_url, set(acked))
    missing = set(acked) - have
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged requests were lost: {sorted(missing)[:5]}"
    assert not list(journal.glob("*.jsonl")), "replayed journal segments should be deleted"


@pytest.mark.timeout(120)
def test_writer_process_finishes_the_journal_of_a_killed_gateway(
    tmp_path: Path, upstream: FakeUpstream, store_url: str
) -> None:
    config = write_config(tmp_path / "gw.yaml", upstream, store_url)
    journal = tmp_path / "journal"
    acked: list[str] = []
    with gateway_process(config) as (process, url):
        stop = threading.Event()
        threads = load(url, stop, acked)
        time.sleep(2.0)
        writer = writer_pid(journal)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        stop.set()
        for thread in threads:
            thread.join(10)
    assert len(acked) > 200, f"too little load to mean anything: {len(acked)} acknowledged"
    # No restart: the writer outlives the gateway, stores the rest, deletes the files, then stops.
    have = wait_for_rows(store_url, set(acked))
    missing = set(acked) - have
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged requests were lost: {sorted(missing)[:5]}"
    assert gone(writer, 15), "the writer should stop once no gateway appends to the journal"
    assert not list(journal.glob("*.jsonl")), "stored journal segments should be deleted"
    assert (read_status(journal) or {}).get("live_segments") == 0


@pytest.mark.timeout(120)
def test_killed_writer_is_restarted_and_two_workers_share_one(tmp_path: Path, upstream: FakeUpstream) -> None:
    store_url = f"sqlite:///{tmp_path}/requests.db"
    config = write_config(tmp_path / "gw.yaml", upstream, store_url, workers=2)
    journal = tmp_path / "journal"
    acked: list[str] = []
    with gateway_process(config) as (_, url):
        deadline = time.monotonic() + 30
        while len(list(journal.glob("*.jsonl"))) < 2:  # each worker appends to its own segment
            assert time.monotonic() < deadline, "the second worker did not open its journal segment"
            time.sleep(0.1)
        stop = threading.Event()
        threads = load(url, stop, acked)
        time.sleep(1.5)
        first = writer_pid(journal)
        os.kill(first, signal.SIGKILL)  # mid-batch, most likely: it resumes from its status file
        time.sleep(2.5)
        second = writer_pid(journal)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert second != first
        assert len(acked) > 200, f"too little load to mean anything: {len(acked)} acknowledged"
        have = wait_for_rows(store_url, set(acked))
        missing = set(acked) - have
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged requests were lost: {sorted(missing)[:5]}"
        deadline = time.monotonic() + 5
        while writers_holding(journal) != {second}:
            assert time.monotonic() < deadline, f"one writer per journal, found {writers_holding(journal)}"
            time.sleep(0.1)
        ready = httpx.get(url + "/readyz").json()["record"]
        assert ready["writer"] == "process" and ready["writer_pid"] == second and ready["healthy"] is True
    assert len(stored_ids(store_url)) == len(set(stored_ids(store_url)))


@pytest.mark.timeout(120)
def test_store_outage_keeps_records_on_disk_and_recovers(tmp_path: Path, upstream: FakeUpstream, pg_url: str) -> None:
    down_url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"  # nothing listens there
    config = write_config(tmp_path / "gw.yaml", upstream, down_url)
    ids = [f"outage-{n}" for n in range(50)]
    with gateway_process(config) as (_, url):
        for rid in ids:
            response = httpx.post(
                url + "/v1/chat/completions",
                headers={"x-request-id": rid},
                json={"model": "up", "messages": [{"role": "user", "content": rid}]},
            )
            assert response.status_code == 200  # serving goes on while the store is down
        ready = httpx.get(url + "/readyz").json()
        assert ready["status"] == "degraded"
        assert ready["record"]["healthy"] is False and ready["record"]["pending_bytes"] > 0
    # The store comes back (here: the operator points the gateway at it) and the backlog is written.
    write_config(tmp_path / "gw.yaml", upstream, pg_url)
    with gateway_process(config) as (_, url):
        have = wait_for_rows(pg_url, set(ids))
        assert set(ids) <= have
        deadline = time.monotonic() + 10
        while httpx.get(url + "/readyz").json()["status"] != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.1)
