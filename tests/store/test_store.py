"""The SQL record store on real SQLite and real PostgreSQL: writes, search, rollups, erasure, retention."""

from __future__ import annotations

import time
from typing import Any

import pytest

from opsgate.domain.config import RetentionConfig, RetentionRule
from opsgate.store.migrations import MIGRATIONS
from opsgate.store.query import RecordQuery
from opsgate.store.sql import SqlRecordStore

NOW = time.time()


def record(n: int, **fields: Any) -> dict[str, Any]:
    base = {
        "id": f"req-{n:05d}",
        "ts": NOW - n,
        "endpoint": "chat",
        "model": "m1",
        "deployment": "m1#0",
        "status": 200,
        "user_id": "alice",
        "tenant": "t1",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_ms": 12.5,
        "cost": 0.001,
        "input_text": f"question number {n}",
        "output_text": f"answer {n}",
        "request": '{"messages": []}',
        "response": '{"content": "x"}',
        "tags": {"team": "search"},
    }
    return {**base, **fields}


def test_migrations_are_recorded_and_idempotent(store: SqlRecordStore, store_url: str) -> None:
    from opsgate.store.record_log import open_store

    again = open_store(store_url)  # a second start applies nothing new and does not fail
    with again.connection() as conn:
        names = [r[0] for r in again.execute(conn, "SELECT name FROM schema_migrations").fetchall()]
    again.close()
    assert sorted(names) == sorted(m.name for m in MIGRATIONS)


def test_write_is_idempotent_and_rolls_up_once(store: SqlRecordStore) -> None:
    batch = [record(n) for n in range(10)]
    assert store.write_batch(batch) == 10
    assert store.write_batch(batch) == 0  # a journal replay stores nothing twice
    assert store.write_batch([record(3), record(3)]) == 0
    [usage] = store.usage("model", None, None)
    assert usage["requests"] == 10 and usage["prompt_tokens"] == 100 and usage["completion_tokens"] == 50
    assert usage["cost"] == pytest.approx(0.01)


def test_unknown_cost_stays_unknown(store: SqlRecordStore) -> None:
    store.write_batch([record(1, cost=None, model="free?")])
    [usage] = store.usage("model", None, None)
    assert usage["cost"] is None and usage["priced_requests"] == 0


def test_search_filters_and_pagination(store: SqlRecordStore) -> None:
    store.write_batch(
        [
            record(n, model="m2" if n % 2 else "m1", status=500 if n == 4 else 200, latency_ms=float(n))
            for n in range(20)
        ]
    )
    assert len(store.search(RecordQuery(model="m2", limit=100))[0]) == 10
    assert [r["id"] for r in store.search(RecordQuery(status="5xx"))[0]] == ["req-00004"]
    assert len(store.search(RecordQuery(status="error"))[0]) == 1
    assert len(store.search(RecordQuery(min_latency_ms=15, limit=100))[0]) == 5
    assert len(store.search(RecordQuery(since=NOW - 4.5, limit=100))[0]) == 5
    assert len(store.search(RecordQuery(tags={"team": "search"}, limit=100))[0]) == 20
    assert store.search(RecordQuery(tags={"team": "ads"}))[0] == []
    seen: list[str] = []
    query = RecordQuery(limit=7)
    while True:
        page, cursor = store.search(query)
        seen += [r["id"] for r in page]
        if cursor is None:
            break
        from opsgate.store.query import decode_cursor

        query.cursor = decode_cursor(cursor)
    assert seen == [f"req-{n:05d}" for n in range(20)]  # newest first, each exactly once
    row = store.search(RecordQuery(limit=1))[0][0]
    assert row["stream"] is False and row["tags"] == {"team": "search"} and "request" not in row


def test_full_text_search_any_script(store: SqlRecordStore) -> None:
    store.write_batch(
        [
            record(1, input_text="I need a refund for order 42", output_text="Sure"),
            record(2, input_text="東京は日本の首都です", output_text="はい"),
            record(3, input_text="Grüße aus München", output_text="Servus"),
            record(4, input_text="unrelated", output_text="The REFUND was issued"),
        ]
    )
    assert {r["id"] for r in store.search(RecordQuery(text="refund"))[0]} == {"req-00001", "req-00004"}
    assert [r["id"] for r in store.search(RecordQuery(text="日本の"))[0]] == ["req-00002"]
    assert [r["id"] for r in store.search(RecordQuery(text="München"))[0]] == ["req-00003"]
    assert [r["id"] for r in store.search(RecordQuery(text="東京"))[0]] == ["req-00002"]  # 2 chars: LIKE path
    assert store.search(RecordQuery(text='refund" OR 1=1 --'))[0] == []  # quoted, never SQL


def test_get_returns_payloads(store: SqlRecordStore) -> None:
    store.write_batch([record(7)])
    got = store.get("req-00007")
    assert got is not None and got["request"] == '{"messages": []}' and got["user_id"] == "alice"
    assert store.get("nope") is None


def test_erasure_leaves_no_trace(store: SqlRecordStore) -> None:
    store.write_batch([record(n, user_id="bob" if n < 5 else "carol", input_text=f"bob secret {n}") for n in range(10)])
    result = store.erase_user("bob", actor="test")
    assert result["requests_deleted"] == 5
    assert result["before"]["requests"] == 5
    assert result["after"] == {
        "requests": 0,
        "usage_daily": 0,
        "audit_log": 0,
        "eval_items": 0,
        "eval_scores": 0,
        "feedback": 0,
    }
    # Every table, and the search index, is clean of bob.
    assert store.search(RecordQuery(user="bob"))[0] == []
    assert {r["user_id"] for r in store.search(RecordQuery(text="bob secret", limit=100))[0]} == {"carol"}
    if hasattr(store, "fts_integrity_check"):
        store.fts_integrity_check()
        assert store.fts_matches("bob secret 1") == 0
    # Usage is kept, but anonymised.
    by_user = {u["user"]: u["requests"] for u in store.usage("user", None, None)}
    assert by_user == {"": 5, "carol": 5}
    [entry] = store.audit_entries()
    assert entry["action"] == "erase_user" and "bob" not in str(entry)
    # A record of bob's journaled before the erasure but stored after it is dropped...
    assert store.write_batch([record(99, user_id="bob", ts=time.time() - 60)]) == 0
    # ...while a new request from bob after the erasure is his to make.
    assert store.write_batch([record(100, user_id="bob", ts=time.time() + 1)]) == 1


def test_retention_most_specific_rule_wins(store: SqlRecordStore) -> None:
    day = 86400
    store.write_batch(
        [
            record(1, ts=NOW - 10 * day, tenant="t1", model="m1"),
            record(2, ts=NOW - 10 * day, tenant="t2", model="m1"),
            record(3, ts=NOW - 40 * day, tenant="t2", model="m1"),
            record(4, ts=NOW - 10 * day, tenant="t2", model="keep"),
            record(5, ts=NOW - 1 * day, tenant="t1", model="m1"),
        ]
    )
    retention = RetentionConfig(
        default_days=30,
        rules=[RetentionRule(tenant="t1", days=7), RetentionRule(tenant="t2", model="keep", days=365)],
        batch_size=1,
    )
    deleted = store.delete_expired(retention, now=NOW)
    left = sorted(r["id"] for r in store.search(RecordQuery(limit=100))[0])
    assert deleted == 2
    assert left == ["req-00002", "req-00004", "req-00005"]
    if hasattr(store, "fts_integrity_check"):
        store.fts_integrity_check()


def test_tag_filter_matches_client_metadata(store: SqlRecordStore) -> None:
    store.write_batch([record(1, tags=None, metadata={"customer": "acme"}), record(2, tags=None)])
    assert [r["id"] for r in store.search(RecordQuery(tags={"customer": "acme"}))[0]] == ["req-00001"]


def test_recent_text_search_is_exact_whatever_the_write_order(store: SqlRecordStore) -> None:
    # Written out of time order, as long streams and journal replays are: the rowid bound that SQLite
    # uses for recent windows must still find every match inside the window and none outside it.
    now = time.time()
    rows = [
        record(1, id="in-window-written-first", ts=now - 100, input_text="needle one"),
        record(2, id="before-window", ts=now - 3 * 3600, input_text="needle two"),
        record(3, id="in-window-written-late", ts=now - 1000, input_text="needle three"),
        record(4, id="no-match", ts=now - 50, input_text="haystack"),
    ]
    for row in rows:
        store.write_batch([row])  # one batch each: rowids follow this order
    found, _ = store.search(RecordQuery(text="needle", since=now - 2000))
    assert {r["id"] for r in found} == {"in-window-written-first", "in-window-written-late"}
    everything, _ = store.search(RecordQuery(text="needle"))
    assert len(everything) == 3
    old_window, _ = store.search(RecordQuery(text="needle", since=now - 5 * 86400))  # past the bounded span
    assert len(old_window) == 3


@pytest.mark.parametrize(
    ("walk_rows", "max_walk_rows"),
    [(1000, 12_000), (5, 400), (5, 5), (1, 1)],
    ids=["window-fits-walk", "walk-grows", "bitmap-at-once", "tiny-sample"],
)
def test_postgres_text_search_plans_agree(pg_url: str, walk_rows: int, max_walk_rows: int) -> None:
    # Whichever way search_rows goes (walk the sample, walk further, or the trigram bitmaps), the
    # page, its order and the next cursor must be exactly what the plain query returns.
    from opsgate.store.postgres import PostgresRecordStore
    from opsgate.store.sql import SqlRecordStore as Plain

    store = PostgresRecordStore(pg_url)
    try:
        rows = []
        for n in range(300):
            words = ["common"] + (["sometimes"] if n % 7 == 0 else []) + (["rare"] if n in (5, 250) else [])
            rows.append(record(n, ts=NOW - n - (n % 3) * 0.5, input_text=" ".join(words), model=f"m{n % 2}"))
        store.write_batch(rows)
        store.walk_rows, store.max_walk_rows = walk_rows, max_walk_rows
        for query in (
            RecordQuery(text="common", limit=20),
            RecordQuery(text="sometimes", limit=20),
            RecordQuery(text="sometimes", model="m1", since=NOW - 200, limit=10),
            RecordQuery(text="RARE", limit=20),
            RecordQuery(text="absent", limit=20),
            RecordQuery(text="sometimes", limit=5, cursor=(NOW - 140, "req-00140")),
        ):
            with store.connection() as conn:
                planned = store.search_rows(conn, query, query.limit + 1)
                plain = Plain.search_rows(store, conn, query, query.limit + 1)
            assert [tuple(r) for r in planned] == [tuple(r) for r in plain], query
            assert plain or query.text == "absent"
    finally:
        store.close()
