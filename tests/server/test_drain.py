"""Graceful drain of a real ``opsgate serve`` process: readiness 503 first, in-flight work finishes, log kept."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.deploy.helpers import chat, metric, stored_request_ids, stream, write_config
from tests.deploy.processes import Replica
from tests.deploy.upstream import PacedUpstream
from tests.support import free_port, wait_until


@pytest.fixture(scope="module")
def paced() -> Iterator[PacedUpstream]:
    upstream = PacedUpstream(free_port(), tag="paced").start()
    yield upstream
    upstream.stop()


def test_sigterm_turns_readiness_off_then_finishes_in_flight_work(tmp_path: Path, paced: PacedUpstream) -> None:
    database = tmp_path / "requests.db"
    config = write_config(tmp_path / "gw.yaml", paced.base_url, f"sqlite:///{database}", tmp_path / "journal")
    replica = Replica(
        config,
        free_port(),
        tmp_path / "replica.log",
        OPSGATE_DRAIN_DELAY_SECONDS="2",
        OPSGATE_DRAIN_TIMEOUT_SECONDS="30",
    ).start()
    try:
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
            slow = [pool.submit(chat, client, replica.url, "delay=3", f"slow-{i}") for i in range(3)]
            streamed = pool.submit(stream, client, replica.url, "chunks=25 gap=0.15", "stream-1")
            assert wait_until(lambda: metric(replica.url, "opsgate_inference_requests_in_flight") >= 4, 30)
            replica.signal(signal.SIGTERM)
            # Readiness goes first, while the replica still serves: the balancer takes it out of rotation.
            assert wait_until(lambda: httpx.get(replica.url + "/readyz").status_code == 503, 10)
            assert httpx.get(replica.url + "/readyz").json() == {"status": "draining"}
            late = chat(httpx.Client(timeout=30), replica.url, "delay=0", "late-1")
            assert late.status_code == 200 and late.headers["connection"] == "close"
            assert metric(replica.url, "opsgate_draining") == 1
            assert [f.result().status_code for f in slow] == [200, 200, 200]
            status, body = streamed.result()
            assert status == 200 and body.rstrip().endswith("data: [DONE]") and body.count("w ") == 24
        started = time.monotonic()
        replica.wait(60)
        assert time.monotonic() - started < 30
    finally:
        replica.stop()
    # Every answered request is in the store once the process has exited (the journal was flushed).
    assert {"slow-0", "slow-1", "slow-2", "stream-1", "late-1"} <= stored_request_ids(database)
    assert "Traceback" not in (tmp_path / "replica.log").read_text()


def test_a_second_sigterm_skips_the_drain_window(tmp_path: Path, paced: PacedUpstream) -> None:
    config = write_config(tmp_path / "gw.yaml", paced.base_url, "none", tmp_path / "journal")
    replica = Replica(config, free_port(), tmp_path / "replica.log", OPSGATE_DRAIN_DELAY_SECONDS="120").start()
    try:
        replica.signal(signal.SIGTERM)
        assert wait_until(lambda: httpx.get(replica.url + "/readyz").status_code == 503, 10)
        replica.signal(signal.SIGTERM)
        replica.wait(30)  # well before the 120 s window
    finally:
        replica.stop()
