"""The one-row lease every scheduled job shares (SLO alerts, drift monitor, sentinel): one holder at a
time, renewable by it, free once it expires or is released."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.drift.sentinel_store import SentinelStore
from opsgate.drift.windows import WindowStore
from opsgate.slo.alerts import AlertStore
from opsgate.store import lease
from opsgate.store.record_log import open_store


@pytest.mark.parametrize("table", ["slo_leader", "drift_leader", "sentinel_lease"])
def test_one_holder_until_it_expires_or_gives_up(tmp_path: Path, table: str) -> None:
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    try:
        assert lease.try_lead(store, table, "a", 30, now=1000)
        assert not lease.try_lead(store, table, "b", 30, now=1010)  # a holds it
        assert lease.try_lead(store, table, "a", 30, now=1020)  # a renews, to 1050
        assert not lease.try_lead(store, table, "b", 30, now=1040)
        assert lease.try_lead(store, table, "b", 30, now=1051)  # expired: b takes it
        lease.release(store, table, "a")  # not a's to give up: b keeps it
        assert not lease.try_lead(store, table, "a", 30, now=1060)
        lease.release(store, table, "b")
        assert lease.try_lead(store, table, "a", 30, now=1061)
    finally:
        store.close()


def test_the_stores_use_their_own_tables(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    try:
        alerts, windows, sentinel = AlertStore(store), WindowStore(store), SentinelStore(store)
        assert alerts.try_lead("a", 30, now=1000) and windows.try_lead("b", 30, now=1000)
        assert sentinel.try_lead("c", 30, now=1000)
        assert windows.leader() == ("b", 1030.0) and sentinel.lease()["holder"] == "c"
        sentinel.release("c")
        assert sentinel.lease()["expires"] == 0 and windows.leader() == ("b", 1030.0)
        assert not alerts.try_lead("b", 30, now=1010)  # still a's
    finally:
        store.close()
