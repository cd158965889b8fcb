"""Online and shadow items of an erased user's requests are never stored after the erasure.

Before, an erasure deleted the items stored so far, but samples still queued in the online evaluator
(or being judged, or shadow calls in flight) were stored afterwards, bringing the erased prompt back.
Now the item writer checks the erasure's tombstone (``erasures``: the user's hash and when) in its own
transaction, and on PostgreSQL an erasure and item writers exclude each other with an advisory lock,
so this holds across replicas sharing the database. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.evals.store import ANY_TENANT, EvalStore, ItemResult
from opsgate.store.sql import SqlRecordStore, user_hash
from tests.evals.test_online import online_config
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway, wait_until

RUN = "online:-:chat"


def copy(key: str, user: str | None, made: float) -> ItemResult:
    return ItemResult(key, None, "ok", f"{user}'s passport is X1234567", "noted", request_id=key, user=user,
                      request_ts=made, ts=made, scores={"quality": {"value": 1.0, "passed": True}})  # fmt: skip


def stored(evals: EvalStore, run: str = RUN) -> dict[str, dict[str, Any]]:
    if evals.get_run(ANY_TENANT, run) is None:
        return {}
    return {item["item_key"]: item for item in evals.all_items(run)}


def test_the_writer_drops_copies_of_requests_made_before_their_users_erasure(store: SqlRecordStore) -> None:
    evals = EvalStore(store)
    evals.create_run(None, "chat", kind="online", run_id=RUN)
    before = time.time() - 5
    store.erase_user("alice", "test")  # no rows of hers yet: the queue still holds her samples
    after = time.time() + 5
    dropped = evals.write_results(
        RUN,
        None,
        "chat",
        [copy("r1", "alice", before), copy("r2", "bob", before), copy("r3", None, before), copy("r4", "alice", after)],
    )
    assert dropped == 1
    items = stored(evals)
    assert sorted(items) == ["r2", "r3", "r4"]  # bob's, a request without a user, alice's request after it
    with store.connection() as conn:
        scores = store.execute(conn, "SELECT item_key FROM eval_scores ORDER BY item_key").fetchall()
    assert [row[0] for row in scores] == ["r2", "r3", "r4"]
    # An item stored earlier under the same key does not survive a retry that is now dropped.
    evals.write_results(RUN, None, "chat", [copy("r5", "carol", before)])
    store.erase_user("carol", "test")
    assert evals.write_results(RUN, None, "chat", [copy("r5", "carol", before)]) == 1
    assert "r5" not in stored(evals)


def test_an_erasure_in_progress_on_another_replica_holds_the_writer_until_its_tombstone(pg_url: str) -> None:
    """PostgreSQL: the erasure's transaction (here held open by hand, as another replica's would be)
    takes the erasure lock; a writer that checked before the tombstone committed would store the item."""
    import psycopg

    from opsgate.store.record_log import open_store
    from opsgate.store.sql import ERASURE_LOCK

    store = open_store(pg_url)
    try:
        evals = EvalStore(store)
        evals.create_run(None, "chat", kind="online", run_id=RUN)
        made = time.time() - 5
        result: list[int] = []
        schema_url = pg_url
        with psycopg.connect(schema_url) as erasure:
            erasure.execute("SELECT pg_advisory_xact_lock(%s)", [ERASURE_LOCK])
            writer = threading.Thread(
                target=lambda: result.append(evals.write_results(RUN, None, "chat", [copy("r1", "alice", made)]))
            )
            writer.start()

            def waiting() -> bool:
                row = erasure.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
                    [ERASURE_LOCK],
                ).fetchone()
                return bool(row and row[0] >= 1)

            assert wait_until(waiting, timeout=60), "the item writer did not wait for the erasure"
            erasure.execute(
                "INSERT INTO erasures (user_id, erased_at) VALUES (%s, %s)", [user_hash("alice"), time.time()]
            )
            erasure.commit()
        writer.join(60)
        assert result == [1] and stored(evals) == {}
    finally:
        store.close()


@pytest.fixture()
def gateway(upstream: FakeUpstream, store_url: str) -> Iterator[Gateway]:
    config = online_config(upstream.base_url)
    config["record"] = {"store": store_url}
    gw = start_gateway(config)
    yield gw
    gw.server.stop()


def chat(gw: Gateway, text: str, user: str) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": text}], "user": user}
    assert httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30).status_code == 200


def test_samples_queued_during_an_erasure_are_not_stored_for_the_erased_user(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    evaluator = gateway.app.state.gateway.online_eval
    record_log = gateway.app.state.gateway.record_log
    upstream.script = Script(content="noted")
    release = threading.Event()
    score_batch = evaluator.score_batch

    async def held(samples: list[Any]) -> None:  # the queue (or a slow judge) holds the samples meanwhile
        await asyncio.to_thread(release.wait, 60)
        await score_batch(samples)

    evaluator.score_batch = held
    chat(gateway, "alice's passport is X1234567", "alice")
    chat(gateway, "alice again, X7654321", "alice")
    chat(gateway, "bob's question", "bob")
    assert wait_until(lambda: evaluator.counts["sampled"] == 3, timeout=60), evaluator.status()
    erased = httpx.post(gateway.url + "/admin/erasure", json={"user": "alice"}, timeout=60)
    assert erased.status_code == 200, erased.text
    release.set()
    evals = EvalStore(record_log.store)
    assert wait_until(lambda: evaluator.counts["dropped_erased"] == 2, timeout=60), evaluator.status()
    assert wait_until(lambda: len(stored(evals)) == 1, timeout=60)
    [item] = stored(evals).values()
    assert item["input"] == "bob's question"
    with evals.store.connection() as conn:
        raw = str(evals.store.execute(conn, "SELECT * FROM eval_items").fetchall())
    assert "X1234567" not in raw and "X7654321" not in raw
    assert evaluator.counts["store_failed"] == 0 and evaluator.last_error is None


def test_a_shadow_call_in_flight_during_the_erasure_stores_nothing(store: SqlRecordStore) -> None:
    from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext
    from opsgate.releases.shadow import ShadowMirror
    from tests.releases.test_shadow_payloads import RUN as SHADOW_RUN
    from tests.releases.test_shadow_payloads import arm, live

    async def candidate(ctx: RequestContext) -> GatewayResponse:  # the erasure lands while the call runs
        await asyncio.to_thread(store.erase_user, "alice", "test")
        return JsonResult(body={"choices": [{"message": {"role": "assistant", "content": "noted"}}]})

    mirror = ShadowMirror(candidate, lambda: EvalStore(store))
    alice, bob = live("req-a"), live("req-b")
    alice.body.user = "alice"  # type: ignore[union-attr]
    bob.body.user = "bob"  # type: ignore[union-attr]

    async def go() -> None:
        assert mirror.submit(alice, arm(), "exp_1") and mirror.submit(bob, arm(), "exp_1")
        await asyncio.wait(list(mirror._tasks), timeout=60)

    asyncio.run(go())
    assert mirror.status()["failed"] == 0
    assert sorted(stored(EvalStore(store), SHADOW_RUN)) == ["req-b"]


def request(rid: str, user: str, ts: float) -> dict[str, Any]:
    """A journaled record of ``user`` (what the writer stores as a request row)."""
    return {"id": rid, "ts": ts, "endpoint": "chat", "model": "chat", "status": 200, "user_id": user,
            "input_text": f"{user}'s passport is X1234567", "output_text": "noted"}  # fmt: skip


def test_a_late_request_row_takes_the_copies_stored_before_the_erasure_with_it(store: SqlRecordStore) -> None:
    """The erasure finds copies through the request rows: an item stored before it, while its request was
    still in another replica's journal, is deleted when that request arrives and is dropped as erased."""
    evals = EvalStore(store)
    evals.create_run(None, "chat", kind="online", run_id=RUN)
    made = time.time() - 60
    evals.write_results(RUN, None, "chat", [copy("a1", "alice", made), copy("b1", "bob", made)])
    store.erase_user("alice", "test")
    assert sorted(stored(evals)) == ["a1", "b1"]  # out of the erasure's reach: no request row yet
    assert store.write_batch([request("a1", "alice", ts=made), request("b1", "bob", ts=made)]) == 1
    assert sorted(stored(evals)) == ["b1"]
    with store.connection() as conn:
        scores = store.execute(conn, "SELECT item_key FROM eval_scores").fetchall()
        ids = store.execute(conn, "SELECT id FROM requests").fetchall()
    assert [row[0] for row in scores] == ["b1"] and [row[0] for row in ids] == ["b1"]


def test_an_erasure_in_progress_on_another_replica_holds_the_record_writer_too(pg_url: str) -> None:
    """PostgreSQL: a batch of the user's records journaled before the erasure, stored while it runs on
    another replica, waits for it and is then dropped (before, it could commit beside the erasure's
    DELETE, neither seeing the other, and the erased request stayed)."""
    import psycopg

    from opsgate.store.record_log import open_store
    from opsgate.store.sql import ERASURE_LOCK

    store = open_store(pg_url)
    try:
        made = time.time() - 5
        result: list[int] = []
        with psycopg.connect(pg_url) as erasure:
            erasure.execute("SELECT pg_advisory_xact_lock(%s)", [ERASURE_LOCK])
            writer = threading.Thread(target=lambda: result.append(store.write_batch([request("a1", "alice", made)])))
            writer.start()

            def waiting() -> bool:
                row = erasure.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
                    [ERASURE_LOCK],
                ).fetchone()
                return bool(row and row[0] >= 1)

            assert wait_until(waiting, timeout=60), "the record writer did not wait for the erasure"
            erasure.execute(
                "INSERT INTO erasures (user_id, erased_at) VALUES (%s, %s)", [user_hash("alice"), time.time()]
            )
            erasure.commit()
        writer.join(60)
        assert result == [0]
        with store.connection() as conn:
            assert store.execute(conn, "SELECT count(*) FROM requests").fetchone()[0] == 0
    finally:
        store.close()
