"""The journal's backlog bound: past it large requests are refused (503 record_backlog) and recorded without
payload while small ones from other keys are served; a record the journal cannot take is counted, not hidden.

The gateway tests run on loopback against real SQLite, in both writer modes, with the writer stalled: in
thread mode it is shown an empty journal, in process mode the writer process is stopped (SIGSTOP).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsgate.domain.config import RecordConfig, parse_config
from opsgate.domain.context import JsonResult
from opsgate.domain.errors import OverloadedError
from opsgate.store.backlog import ALL, LARGE, OK, BacklogGate, RecordBacklogFull
from opsgate.store.record_log import RecordLog
from opsgate.store.writer import RecordWriter
from opsgate.store.writer_process import WriterProcess
from tests.fake_upstream import FakeUpstream, Script
from tests.store.test_hostile_http import ADMIN_KEY, admin, chat, config, record_log_of
from tests.store.test_record_log import sample
from tests.support import Gateway, wait_until

MB = 1024 * 1024


class Meter:
    """Fake backlog, appended bytes and free space for the gate, counting how often it measures."""

    def __init__(self) -> None:
        self.pending = 0
        self.appended = 0
        self.free: int | None = None
        self.measured = 0

    def pending_bytes(self) -> int:
        self.measured += 1
        return self.pending

    def gate(self, *, max_mb: int = 10, min_free_mb: int = 0, interval: float = 3600.0) -> BacklogGate:
        return BacklogGate(
            Path("."),
            self.pending_bytes,
            lambda: self.appended,
            max_backlog_bytes=max_mb * MB,
            min_free_bytes=min_free_mb * MB,
            large_body_bytes=64 * 1024,
            refresh_interval=interval,
            free_bytes=lambda _: self.free,
        )


def test_below_the_bound_every_request_is_admitted_and_past_it_large_ones_then_all_are_refused() -> None:
    meter = Meter()
    meter.pending = 9 * MB
    gate = meter.gate(interval=0.0)  # measures every call
    assert gate.refusal(4 * MB) is None and gate.refusal(10) is None
    meter.pending = 11 * MB  # over 10 MiB, under 12.5 MiB
    assert gate.refusal(10) is None and gate.refusal(64 * 1024) is None
    refused = gate.refusal(64 * 1024 + 1)
    assert isinstance(refused, RecordBacklogFull) and gate.status()["state"] == "shedding_large"
    meter.pending = 13 * MB  # past the hard bound: small ones too
    assert isinstance(gate.refusal(10), RecordBacklogFull) and gate.status()["state"] == "shedding_all"
    meter.pending = 0
    assert gate.refusal(4 * MB) is None and gate.status()["state"] == "ok"
    assert (gate.shed_large, gate.shed_all) == (1, 1)


def test_low_free_disk_sheds_like_a_backlog() -> None:
    meter = Meter()
    meter.free = 1000 * MB
    gate = meter.gate(min_free_mb=100, interval=0.0)
    assert gate.refusal(MB) is None
    meter.free = 120 * MB  # below 1.25x the floor: large refused
    assert gate.refusal(10) is None and gate.refusal(MB) is not None
    meter.free = 90 * MB  # below the floor: everything
    assert gate.refusal(10) is not None
    assert gate.status()["free_disk_bytes"] == 90 * MB


def test_the_gate_measures_at_most_once_an_interval_and_counts_appends_in_between() -> None:
    meter = Meter()
    meter.pending = 9 * MB
    gate = meter.gate()  # an hour between measurements
    for _ in range(10_000):
        assert gate.refusal(MB) is None
    assert meter.measured == 1
    meter.appended += 2 * MB  # this process journaled 2 MiB since: over the bound without a new measurement
    assert gate.refusal(MB) is not None and gate.refusal(10) is None
    assert gate.level_at(meter.appended) == LARGE and gate.level_at(4 * MB) == ALL and gate.level_at(0) == OK
    assert meter.measured == 1


def test_the_refusal_is_an_overload_named_record_backlog() -> None:
    error = RecordBacklogFull("full")
    assert isinstance(error, OverloadedError)  # breakers, routing and SLOs treat it as any overload
    answer = JsonResult.from_error(error)
    assert answer.status == 503 and answer.headers["Retry-After"] == "5"
    assert answer.body["error"]["code"] == "record_backlog" and answer.body["error"]["type"] == "overloaded_error"


def test_a_record_the_journal_refuses_is_counted_and_logged_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = RecordLog(RecordConfig(store=f"sqlite:///{tmp_path}/r.db", journal_dir=str(tmp_path / "journal")))
    log.start()
    try:

        def disk_full(line: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(log.journal, "append", disk_full)
        caplog.set_level(logging.ERROR, logger="opsgate.store")
        for n in range(50):
            log.write(sample(f"lost-{n}", "x"))  # never raises: the answer stands
        status = log.status()
        assert status["lost"] == 50 and "No space left" in status["last_lost_error"]
        assert status["state"] == "degraded"
        assert len([r for r in caplog.records if "journal refused" in r.getMessage()]) == 1
    finally:
        monkeypatch.undo()
        log.stop()


# -- through a real gateway ------------------------------------------------------------------------------------


def stall_writer(record_log: RecordLog) -> Callable[[], None]:
    """Stop the writer storing anything; returns what lets it go again."""
    writer = record_log.writer
    if isinstance(writer, RecordWriter):
        journal: Any = writer.journal
        journal.read_bounded = lambda *args, **kwargs: ([], False)  # the thread sees an empty journal
        return lambda: delattr(journal, "read_bounded")
    assert isinstance(writer, WriterProcess)
    assert wait_until(lambda: writer.status()["healthy"], timeout=60), writer.status()
    pid = writer._writer_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    return lambda: os.kill(pid, signal.SIGCONT)


@pytest.fixture(params=["thread", "process"])
def bounded_gateway(request: pytest.FixtureRequest, tmp_path: Path, upstream: FakeUpstream) -> Iterator[Gateway]:
    """A gateway with auth, a real SQLite request log and a 1 MiB journal bound, in either writer mode."""
    upstream.script = Script(content="fine")
    data = config(upstream.base_url, f"sqlite:///{tmp_path}/requests.db", tmp_path / "journal", auth=True)
    data["record"] |= {"max_backlog_mb": 1, "min_free_disk_mb": 0, "shed_body_kb": 64, "writer": request.param}
    gateway = Gateway(parse_config(data), keep_record_config=True)
    gateway.server.start("/readyz", timeout=120)
    yield gateway
    gateway.server.stop()


def new_key(gateway: Gateway, tenant: str) -> tuple[str, str]:
    created = httpx.post(
        gateway.url + "/admin/keys",
        json={"tenant": tenant, "role": "admin", "name": f"{tenant}-key"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    return body["id"], body["secret"]


@pytest.mark.timeout(240)
def test_past_the_bound_a_large_prompt_is_refused_and_recorded_without_payload_and_small_ones_flow(
    bounded_gateway: Gateway,
) -> None:
    gateway = bounded_gateway
    record_log = record_log_of(gateway)
    assert record_log.writer is not None
    flooder_id, flooder = new_key(gateway, "flood")
    small_id, small = new_key(gateway, "small")
    large_text = "L" * 300_000  # its record holds the prompt twice: ~600 KB journaled

    # Below the bound nothing changes: a large prompt is served and recorded in full.
    before = chat(gateway, large_text, key=flooder, request_id="large-before")
    assert before.status_code == 200, before.text

    release = stall_writer(record_log)
    try:
        answers = [chat(gateway, large_text, key=flooder, request_id=f"flood-{n}") for n in range(6)]
        codes = [a.status_code for a in answers]
        assert codes[0] == 200 and 503 in codes, codes  # the journal passed 1 MiB within a few large records
        refused = next(a for a in answers if a.status_code == 503)
        error = refused.json()["error"]
        assert error["code"] == "record_backlog" and error["type"] == "overloaded_error"
        assert int(refused.headers["Retry-After"]) >= 1
        # Another client's small prompt is still served (and recorded) while the journal is over its bound.
        served = chat(gateway, "a small question", key=small, request_id="small-during")
        assert served.status_code == 200, served.text
        ready = admin(gateway, "/readyz", ADMIN_KEY).json()
        assert ready["record"]["backlog"]["state"] == "shedding_large", ready["record"]
        assert ready["record"]["backlog"]["shed_large"] >= 1 and ready["record"]["state"] == "degraded"
        metrics = admin(gateway, "/metrics", ADMIN_KEY).text
        assert "opsgate_record_backlog_shedding 1.0" in metrics
        assert 'opsgate_record_backlog_shed_total{size="large"}' in metrics
    finally:
        release()

    assert record_log.writer.flush(timeout=60), record_log.status()
    rows = admin(gateway, "/admin/requests", ADMIN_KEY, limit=100).json()["data"]
    by_client = {r["client_request_id"]: r for r in rows}
    shed = by_client[f"flood-{codes.index(503)}"]
    record = admin(gateway, f"/admin/requests/{shed['id']}", ADMIN_KEY).json()
    assert record["status"] == 503 and record["error_type"] == "overloaded_error"
    assert record["api_key_id"] == flooder_id and record["tenant"] == "flood"
    assert record["input_text"] is None and record["request"] is None  # the payload was not journaled
    assert "RecordBacklogFull" in record["tags"]["record_error"]
    kept = admin(gateway, f"/admin/requests/{by_client['small-during']['id']}", ADMIN_KEY).json()
    assert kept["status"] == 200 and kept["input_text"] == "a small question" and kept["api_key_id"] == small_id
    full = admin(gateway, f"/admin/requests/{by_client['large-before']['id']}", ADMIN_KEY).json()
    assert full["input_text"] == large_text

    # Stored: the backlog is measured again within the refresh interval and large prompts are served again.
    assert wait_until(lambda: record_log.backlog_gate is not None and record_log.backlog_gate.status()["state"] == "ok")
    again = chat(gateway, large_text, key=flooder, request_id="large-after")
    assert again.status_code == 200, again.text
