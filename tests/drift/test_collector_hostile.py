"""The drift collector against hostile traffic, on SQLite and PostgreSQL: NUL and made-up aliases never
become rows, one refused row never blocks the others, a tenant cannot hide behind a synthetic purpose,
and a blocked store never lets 4 MB prompts pile up in memory."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from opsgate.domain.config import GatewayConfig
from opsgate.drift.collector import DriftCollector
from opsgate.drift.features import TEXT_CHARS, extract
from opsgate.drift.service import DriftMonitor
from opsgate.drift.summary import WindowSummary
from opsgate.drift.windows import BucketRow, WindowStore
from opsgate.store.sql import SqlRecordStore
from tests.drift.conftest import config, models
from tests.drift.traffic import mixed
from tests.store.conftest import pg_url, store_url  # noqa: F401 - fixtures
from tests.support import wait_until

NOW = 1_765_000_000.0
HOSTILE_ALIASES = ["ghost\x00nul", "ghost-model-1", "<img src=x onerror=alert(1)>", "bad\ud800"]


@pytest.fixture()
def store(store_url: str) -> Iterator[SqlRecordStore]:  # noqa: F811
    from opsgate.store.record_log import open_store

    opened = open_store(store_url)
    yield opened
    opened.close()


def gateway_config() -> GatewayConfig:
    return GatewayConfig.model_validate(
        {"models": models("chat-model"), "drift": {"enabled": True, "embeddings": False, "bucket": "1h"}}
    )


def records(n: int, seed: int = 1, **fields: Any) -> list[dict[str, Any]]:
    out = mixed(random.Random(seed), n)
    for record in out:
        record["ts"] = NOW - 60
        record.update(fields)
    return out


def stored_scopes(store: SqlRecordStore) -> list[tuple[str, str]]:
    return WindowStore(store).scopes(0)


def test_unknown_and_nul_aliases_never_reach_the_store(store: SqlRecordStore) -> None:
    monitor = DriftMonitor(gateway_config(), lambda: store)
    collector = monitor.collector
    for alias in HOSTILE_ALIASES:
        for record in records(3, model=alias, status=404):
            collector.write(record)
    for record in records(5, tenant="ev\x00il"):  # a tenant id that cannot be a key: left out
        collector.write(record)
    for record in records(20, tenant="acme"):
        collector.write(record)
    collector.drain()
    assert collector.flush(now=NOW) == 1
    status = collector.status()
    assert status["unknown_alias"] == 3  # ghost-model-1: well formed, but not a configured model
    assert status["ignored"] == 3 * 3 + 5  # malformed aliases (NUL, markup, surrogate) and the NUL tenant
    assert status["flush_errors"] == 0 and status["summarised"] == 20
    assert stored_scopes(store) == [("chat-model", "acme")]
    # The next flush after more traffic is still clean (nothing stuck in the dirty set).
    for record in records(5, seed=2, tenant="acme"):
        collector.write(record)
    collector.drain()
    assert collector.flush(now=NOW) == 1 and collector.status()["flush_errors"] == 0
    # The checker only checks configured aliases, even if old rows of others are in the table.
    WindowStore(store).write("old", [BucketRow("ghost-model-1", int(NOW // 3600 * 3600), "", WindowSummary(8))])
    assert {alias for alias, _ in monitor.checker.scopes(NOW)} == {"chat-model"}


def test_a_row_the_store_refuses_never_blocks_the_others(store: SqlRecordStore) -> None:
    collector = DriftCollector(config(embeddings=False), WindowStore(store), replica="r1")
    for record in records(10):
        collector.add(record)
    # A key no record can make any more (extract refuses it), as an older version could: a lone
    # surrogate and a NUL, which both stores refuse as data.
    bad = ("bad\ud800\x00", int(NOW // 3600 * 3600), "")
    with collector._lock:
        collector._buckets[bad] = WindowSummary(capacity=8)
        collector._dirty.add(bad)
    assert collector.flush(now=NOW) == 1  # the good row is written
    status = collector.status()
    assert status["flush_refused"] == 1 and status["flush_errors"] == 1
    assert stored_scopes(store) == [("chat-model", "")]
    for record in records(4, seed=3):
        collector.add(record)
    assert collector.flush(now=NOW) == 1  # the refused row is not retried forever
    assert collector.status()["flush_errors"] == 1
    assert WindowStore(store).read("chat-model", None, 0, int(NOW) + 3600, 8)[0].requests == 14


def test_only_an_operator_request_may_be_synthetic(store: SqlRecordStore) -> None:
    monitor = DriftMonitor(gateway_config(), lambda: store)
    collector = monitor.collector
    purposes: list[dict[str, Any]] = [
        {"metadata": {"purpose": "sentinel"}},
        {"metadata": {"opsgate_purpose": "bias"}},  # bias audits and errors_trail/explain tag this key
        {"tags": {"purpose": "eval"}},
    ]
    for fields in purposes:
        for record in records(4, **fields):  # an operator (no tenant; auth off has none): skipped
            collector.write(record)
        for record in records(4, tenant="acme", **fields):  # a tenant claiming it: still counted
            collector.write(record)
    collector.drain()
    collector.flush(now=NOW)
    assert collector.status()["summarised"] == 12 and stored_scopes(store) == [("chat-model", "acme")]
    assert extract(records(1, metadata={"opsgate_purpose": "sentinel"})[0]) is None
    assert extract(records(1, tenant="t", metadata={"opsgate_purpose": "sentinel"})[0]) is not None


class BlockedWindows(WindowStore):
    """A window store whose writes wait until released (a store locked by a long transaction)."""

    def __init__(self, store: SqlRecordStore) -> None:
        super().__init__(store)
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, replica: str, rows: Any, now: float | None = None) -> int:
        self.entered.set()
        self.release.wait(120)
        return super().write(replica, rows, now)


def test_queue_is_bounded_by_bytes_not_records(store: SqlRecordStore) -> None:
    cap = 256 * 1024
    windows = BlockedWindows(store)
    settings = config(embeddings=False, flush_interval=0.05, queue_bytes=cap, language_sample_rate=0.0)
    collector = DriftCollector(settings, windows, replica="blocked")
    collector.start()
    try:
        collector.write(records(1)[0])
        assert wait_until(windows.entered.is_set, 60)  # the summariser now waits in its flush
        huge = "word " * (4 * 1024 * 1024 // 5)  # a 4 MB prompt and a 4 MB answer
        for record in records(50, seed=4):
            record["input_text"] = huge
            record["request"] = {"messages": [{"role": "user", "content": huge}]}
            record["output_text"] = huge
            collector.write(record)
        held = collector.status()["queued_bytes"]
        assert 0 < held <= cap, held
        assert collector.status()["queued"] + collector.counts["dropped"] == 50
        assert collector.counts["dropped"] > 0  # 50 records of even 2 KB texts pass the small cap
        for obs, _ in list(collector._queue.queue):
            assert obs.prompt_chars == len(huge) and len(obs.prompt_text or "") <= TEXT_CHARS
            assert obs.answer_chars == len(huge) and len(obs.answer_text or "") <= TEXT_CHARS
    finally:
        windows.release.set()
        collector.stop()
    assert collector.status()["queued_bytes"] == 0
    summary, _ = WindowStore(store).read("chat-model", None, 0, int(NOW) + 3600, 8)
    assert summary.requests == 1 + 50 - collector.counts["dropped"]


def test_store_errors_map_to_503_by_the_stores_own_declaration(store: SqlRecordStore) -> None:
    import asyncio
    import sqlite3

    import psycopg

    from opsgate.server.drift_routes import store_work
    from opsgate.store.record_log import StoreUnavailable

    locked: Exception = (
        sqlite3.OperationalError("database is locked")
        if store.dialect == "sqlite"
        else psycopg.OperationalError("couldn't get a connection after 10.00 sec")
    )

    def fail(error: Exception) -> Any:
        def call() -> Any:
            raise error

        return call

    with pytest.raises(StoreUnavailable) as caught:
        asyncio.run(store_work(lambda: store, fail(locked)))
    assert caught.value.status == 503 and caught.value.to_body()["error"]["code"] == "store_unavailable"
    with pytest.raises(KeyError):  # a bug is not an outage: it stays a logged 500
        asyncio.run(store_work(lambda: store, fail(KeyError("x"))))
    assert asyncio.run(store_work(lambda: store, lambda: 7)) == 7


def test_refusals_are_found_off_the_request_path_with_the_one_detector() -> None:
    from opsgate.evals.scorers_free import looks_like_refusal

    collector = DriftCollector(config(embeddings=False, language_sample_rate=0.0), None)
    answers = ["I'm sorry, I can't help with that." + " x" * 3_000_000, "   \n", "Sure, here is the recipe. " * 50]
    for answer in answers:
        collector.write({**records(1)[0], "output_text": answer, "status": 200})
    queued = [obs for obs, _ in list(collector._queue.queue)]
    assert [o.refused for o in queued] == [False, True, False]  # only emptiness is judged in write()
    collector.drain()
    [summary] = collector._buckets.values()
    expected = [looks_like_refusal(a) or not a.strip() for a in answers]
    assert expected == [True, True, False]
    assert summary.refusals == 2


def test_aliases_follow_a_config_reload(store: SqlRecordStore) -> None:
    from types import SimpleNamespace

    monitor = DriftMonitor(gateway_config(), lambda: store)
    gateway = SimpleNamespace(config=gateway_config())
    monitor.attach_app(SimpleNamespace(state=SimpleNamespace(gateway=gateway)))
    monitor.collector.write(records(1, model="new-model")[0])
    assert monitor.collector.status()["unknown_alias"] == 1
    reloaded = {"models": models("chat-model", "new-model"), "drift": {"enabled": True, "embeddings": False}}
    gateway.config = GatewayConfig.model_validate(reloaded)  # what server/reload.py swaps in
    monitor.collector.write(records(1, model="new-model")[0])
    monitor.collector.drain()
    assert monitor.collector.status()["summarised"] == 1 and monitor.checker.is_configured("new-model")
