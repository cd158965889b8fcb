"""One scope whose check fails (a bad pinned baseline) must not stop the monitor's round for the others.

A probe pinned tenant A's baseline to 0..4e9: every round then raised ``WindowError`` from that one
scope, so no scope was stored, no drift SLO measured, nothing pruned, and ``last_error`` did not say
which scope. Such a baseline can still be in a store written before the PUT validated it, or become
invalid later (a longer ``current_window`` after a reload), so the round must survive it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opsgate.drift.history import DriftHistory
from opsgate.drift.service import DriftMonitor
from opsgate.drift.summary import WindowSummary
from opsgate.drift.windows import BucketRow, WindowStore
from opsgate.store.sql import SqlRecordStore
from tests.drift.test_monitor import NOW, feed, gateway_config, measurements
from tests.store.conftest import pg_url, store_url  # noqa: F401 - fixtures


@pytest.fixture()
def store(store_url: str) -> Iterator[SqlRecordStore]:  # noqa: F811
    from opsgate.store.record_log import open_store

    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.mark.parametrize(
    ("start", "end"),
    [(0.0, 4e9), (NOW - 20, NOW + 3600)],  # longer than 400 days; overlapping the current window
    ids=["huge", "overlap"],
)
def test_a_bad_baseline_fails_only_its_own_scope(store: SqlRecordStore, start: float, end: float) -> None:
    monitor = DriftMonitor(gateway_config(per_tenant=True), lambda: store)
    for tenant in (None, "acme", "evil"):
        feed(monitor, 30, 150, tenant=tenant)
        feed(monitor, 2, 150, tenant=tenant)
    monitor.collector.flush(now=NOW)
    windows = WindowStore(store)
    old = NOW - 400 * 86400  # past retention: the round's prune must still delete it
    windows.write("gone", [BucketRow("chat-model", int(old), "", WindowSummary(capacity=4))], now=old)
    windows.set_baseline("chat-model", "evil", start, end, "probe")

    results = monitor.tick(now=NOW)

    by_scope = {r["tenant"]: r for r in results}
    assert set(by_scope) == {None, "acme", "evil"}
    assert "error" not in by_scope[None] and "error" not in by_scope["acme"]
    failed = by_scope["evil"]
    assert failed["alias"] == "chat-model" and failed["error"].startswith("WindowError")
    assert failed["insufficient"] and not failed["drifted"] and "check failed" in failed["headline"]
    stored = {(r["tenant"], "error" in r) for r in DriftHistory(store).list()}
    assert stored == {(None, False), ("acme", False), ("evil", True)}
    values = measurements(store)  # the failed scope is not measured; the others are
    assert values["chat-drift"] == [0.0] and values["any-drift"] == [0.0] and values["acme-drift"] == [0.0]
    status = monitor.status()
    assert status["rounds"] == 1 and status["checks"] == 3
    assert "chat-model" in status["last_error"] and "evil" in status["last_error"]
    assert windows.read("chat-model", None, int(old) - 1, int(old) + 1, 4)[1] == 0  # pruned

    windows.clear_baseline("chat-model", "evil")
    monitor.tick(now=NOW + 60)
    assert monitor.status()["rounds"] == 2 and monitor.status()["last_error"] is None
