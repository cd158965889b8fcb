"""The hash-chained audit log on real SQLite and PostgreSQL: appends, tampering, legacy rows, concurrency."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from opsgate.audit import GENESIS, append_audit, entry_hash, list_entries, verify_chain
from opsgate.domain.principal import Principal
from opsgate.store import migrations
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore
from tests.audit.conftest import raw, unprotect


def fill(store: SqlRecordStore, count: int) -> None:
    for n in range(count):
        append_audit(store, "tester", "key_create", f"key-{n}", {"before": None, "after": {"role": "viewer", "n": n}})


def test_entries_chain_from_genesis(store: SqlRecordStore) -> None:
    fill(store, 4)
    entries = list(reversed(list_entries(store, 10)))
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    last = entries[-1]
    details = '{"after":{"n":3,"role":"viewer"},"before":null}'
    assert last.hash == entry_hash(last.prev_hash or "", last.seq, last.ts, "tester", "key_create", "key-3", details)
    report = verify_chain(store)
    assert report.ok and report.entries == 4 and report.legacy_entries == 0
    assert (report.head_seq, report.head_hash) == (4, last.hash)


def test_the_table_refuses_updates_and_deletes(store: SqlRecordStore) -> None:
    fill(store, 2)
    with pytest.raises(Exception, match="append-only"):
        raw(store, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")
    with pytest.raises(Exception, match="append-only"):
        raw(store, "DELETE FROM audit_log WHERE seq = 2")
    assert verify_chain(store).ok


def test_a_changed_entry_is_found(store: SqlRecordStore) -> None:
    fill(store, 5)
    unprotect(store)
    raw(store, "UPDATE audit_log SET details = ? WHERE seq = 3", ['{"after":{"role":"admin"}}'])
    report = verify_chain(store)
    assert not report.ok and report.first_broken_seq == 3
    assert report.problem is not None and "changed" in report.problem


def test_a_changed_actor_with_a_recomputed_hash_breaks_the_next_link(store: SqlRecordStore) -> None:
    fill(store, 4)
    unprotect(store)
    (second,) = [e for e in list_entries(store, 10) if e.seq == 2]
    forged = entry_hash(second.prev_hash or "", 2, second.ts, "mallory", second.action, second.target, None)
    raw(store, "UPDATE audit_log SET actor = 'mallory', details = NULL, hash = ? WHERE seq = 2", [forged])
    report = verify_chain(store)
    assert (
        not report.ok and report.first_broken_seq == 3
    )  # entry 2 is self-consistent now; 3 still points at the old one


def test_a_deleted_entry_is_found(store: SqlRecordStore) -> None:
    fill(store, 5)
    unprotect(store)
    raw(store, "DELETE FROM audit_log WHERE seq = 3")
    report = verify_chain(store)
    assert not report.ok and report.first_broken_seq == 4
    assert report.problem is not None and "3..3 are missing" in report.problem


def test_an_entry_inserted_outside_the_chain_is_found(store: SqlRecordStore) -> None:
    fill(store, 2)
    raw(store, "INSERT INTO audit_log (seq, ts, actor, action) VALUES (3, 0, 'mallory', 'key_create')")
    fill(store, 1)
    report = verify_chain(store)
    assert not report.ok and report.first_broken_seq == 3


def test_an_anchor_catches_truncation(store: SqlRecordStore) -> None:
    fill(store, 3)
    head = verify_chain(store)
    assert head.head_seq == 3 and head.head_hash is not None
    unprotect(store)
    raw(store, "DELETE FROM audit_log WHERE seq = 3")
    assert verify_chain(store).ok  # a chain cannot see its own end cut off...
    report = verify_chain(store, anchor=(3, head.head_hash))
    assert not report.ok and report.first_broken_seq == 3 and "gone" in (report.problem or "")  # ...an anchor can
    fill(store, 1)  # a new entry 3 in its place is not the anchored one
    assert verify_chain(store, anchor=(3, head.head_hash)).first_broken_seq == 3


def test_principal_actor_and_erasure_are_chained(store: SqlRecordStore) -> None:
    alice = Principal(key_id="key_a1", tenant="acme", role="admin", name="alice")
    entry = append_audit(store, alice, "key_revoke", "key_b2", {"before": {"revoked": False}})
    assert entry.actor == "key_a1"
    assert entry.details == {
        "before": {"revoked": False},
        "actor": {"key_id": "key_a1", "name": "alice", "tenant": "acme", "role": "admin"},
    }
    store.erase_user("zoe", actor="key_a1")
    store.audit("cli", "config_reload", None, {"n": 1})
    [newest, erasure, _] = list_entries(store, 3)
    assert erasure.action == "erase_user" and erasure.prev_hash == entry.hash and newest.prev_hash == erasure.hash
    assert verify_chain(store).ok


def test_rows_from_before_the_chain_are_folded_in(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A database from before migration 0003, with two audit rows written the old way.
    without_chain = tuple(m for m in migrations.MIGRATIONS if m.name != "0003_audit_chain")
    monkeypatch.setattr(migrations, "MIGRATIONS", without_chain)
    old = open_store(store_url)
    for n in range(2):
        raw(
            old,
            "INSERT INTO audit_log (ts, actor, action, target, details) VALUES (?,?,?,?,?)",
            [1700000000.5 + n, "admin-api", "erase_user", f"user-sha256:{n}", '{"requests_deleted":1}'],
        )
    old.close()
    monkeypatch.undo()

    store = open_store(store_url)  # upgrades: 0003 runs now
    try:
        fill(store, 2)
        report = verify_chain(store)
        assert report.ok and report.entries == 4 and report.legacy_entries == 2
        first_chained = next(e for e in list_entries(store, 10) if e.seq == 3)
        assert first_chained.prev_hash not in (None, GENESIS)  # commits to the two old rows
        unprotect(store)
        raw(store, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 1")
        broken = verify_chain(store)
        assert not broken.ok and broken.first_broken_seq == 3 and "pre-chain" in (broken.problem or "")
    finally:
        store.close()


_APPENDER = """
import sys
from opsgate.audit import append_audit
from opsgate.store.record_log import open_store
store = open_store(sys.argv[1])
for n in range(int(sys.argv[3])):
    append_audit(store, sys.argv[2], "key_create", f"{sys.argv[2]}-{n}", {"n": n})
store.close()
"""


def test_appends_from_many_processes_never_fork(store_url: str, tmp_path: Path) -> None:
    open_store(store_url).close()  # migrate once up front, as the gateway's start would
    script = tmp_path / "append.py"
    script.write_text(_APPENDER)
    writers = [
        subprocess.Popen([sys.executable, str(script), store_url, f"proc{i}", "15"], stderr=subprocess.PIPE)
        for i in range(4)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    store = open_store(store_url)
    try:
        report = verify_chain(store)
        assert report.ok and report.entries == 60 and report.head_seq == 60
        targets = {e.target for e in list_entries(store, 100)}
        assert len(targets) == 60  # every append landed, none overwrote another
    finally:
        store.close()
