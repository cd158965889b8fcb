"""Erasure and retention reach the copies the quality loop keeps of requests, on SQLite and PostgreSQL.

Before, ``erase_user`` deleted only ``requests`` and ``usage_daily``: online and shadow evaluation items
(the prompt and the answer), their scores and the user's feedback (user id, comment) stayed, while
the erasure's "after" said 0. Retention never deleted those tables at all.
"""

from __future__ import annotations

import time
from typing import Any

from opsgate.domain.config import RetentionConfig, RetentionRule
from opsgate.evals.store import ANY_TENANT, EvalStore, ItemResult
from opsgate.store.sql import SqlRecordStore

NOW = time.time()
DAY = 86400.0


def request(rid: str, user: str, ts: float = NOW - 60, tenant: str = "t1", model: str = "m1") -> dict[str, Any]:
    return {
        "id": rid,
        "ts": ts,
        "endpoint": "chat",
        "model": model,
        "deployment": f"{model}#0",
        "status": 200,
        "user_id": user,
        "tenant": tenant,
        "input_text": f"{user}'s passport is X1234567 ({rid})",
        "output_text": "noted",
        "request": "{}",
        "response": "{}",
    }


def item(rid: str, ts: float, scored: bool = True) -> ItemResult:
    scores = {"quality": {"value": 1.0, "passed": True}, "judge": {"value": 0.8, "details": {"reason": "ok"}}}
    return ItemResult(
        item_key=rid,
        idx=None,
        status="ok",
        input=f"prompt of {rid}",
        output=f"answer of {rid}",
        request_id=rid,
        scores=scores if scored else None,
        ts=ts,
    )


def feedback(store: SqlRecordStore, fid: str, rid: str, user: str | None, ts: float = NOW - 30, **cols: Any) -> None:
    row = {"tenant": "t1", "model": "m1", "comment": f"{user} here, call +33 6 12 34 56 78", **cols}
    with store.connection() as conn, store.transaction(conn):
        store.execute(
            conn,
            "INSERT INTO feedback (id, ts, request_id, tenant, model, deployment, user_id, raw_score, score, "
            "positive, comment) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [fid, ts, rid, row["tenant"], row["model"], None, user, "down", 0.0, 0, row["comment"]],
        )


def rows(store: SqlRecordStore, statement: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with store.connection() as conn:
        return [tuple(r) for r in store.execute(conn, statement, params or []).fetchall()]


def test_erasure_removes_eval_copies_and_anonymises_feedback(store: SqlRecordStore) -> None:
    store.write_batch([request("a1", "alice"), request("a2", "alice"), request("c1", "carol")])
    evals = EvalStore(store)
    online = evals.ensure_online_run("t1", "m1")
    evals.write_results(online, "t1", "m1", [item("a1", NOW - 60), item("a2", NOW - 60), item("c1", NOW - 60)])
    shadow = evals.create_run("t1", "m1", kind="shadow", run_id="shadow:exp_1:t1", arm="shadow")
    evals.write_results(shadow, "t1", "m1", [item("a1", NOW - 50, scored=False)])
    offline = evals.create_run(None, "m1")
    evals.write_results(offline, None, "m1", [item("0000", NOW - 40)])  # a dataset item, no user's request
    feedback(store, "fb_alice", "a1", "alice")
    feedback(store, "fb_alice_on_carol", "c1", "alice")  # the user's own words on another's answer
    feedback(store, "fb_app_on_alice", "a2", None)  # posted without a user, about the user's request
    feedback(store, "fb_carol", "c1", "carol")

    result = store.erase_user("alice", actor="test")

    assert result["before"]["eval_items"] == 3 and result["before"]["eval_scores"] == 4
    assert result["before"]["feedback"] == 3
    zero = {"requests": 0, "usage_daily": 0, "audit_log": 0, "eval_items": 0, "eval_scores": 0, "feedback": 0}
    assert result["after"] == zero
    assert result["eval_items_deleted"] == 3 and result["eval_scores_deleted"] == 4
    assert result["feedback_anonymised"] == 3
    # Nothing of alice's text is left in the evaluation tables; carol's and the dataset's items stay.
    assert sorted(rows(store, "SELECT run_id, item_key FROM eval_items")) == sorted([(offline, "0000"), (online, "c1")])
    assert not [r for r in rows(store, "SELECT input, output FROM eval_items") if "a1" in str(r) or "a2" in str(r)]
    assert sorted(rows(store, "SELECT DISTINCT item_key FROM eval_scores")) == [("0000",), ("c1",)]
    assert [i["item_key"] for i in evals.all_items(online)] == ["c1"]
    # Feedback keeps its rating (CSAT does not move) but neither the user nor the comment.
    left = {r[0]: r[1:] for r in rows(store, "SELECT id, user_id, comment, positive, raw_score FROM feedback")}
    assert left["fb_alice"] == (None, None, 0, "down")
    assert left["fb_alice_on_carol"] == (None, None, 0, "down")
    assert left["fb_app_on_alice"] == (None, None, 0, "down")
    assert left["fb_carol"] == ("carol", "carol here, call +33 6 12 34 56 78", 0, "down")
    assert not rows(store, "SELECT id FROM feedback WHERE user_id = ? OR comment LIKE ?", ["alice", "alice%"])
    # The erasure is audited with what it did, naming only the hash.
    [entry] = [e for e in store.audit_entries() if e["action"] == "erase_user"]
    assert entry["details"]["eval_items_deleted"] == 3 and entry["details"]["feedback_anonymised"] == 3
    assert "alice" not in str(entry)


def test_retention_deletes_expired_live_copies_in_batches(store: SqlRecordStore) -> None:
    old, recent = NOW - 40 * DAY, NOW - 1 * DAY
    store.write_batch(
        [
            request("old1", "u", ts=old),
            request("old2", "u", ts=old),
            request("new1", "u", ts=recent),
            request("keep1", "u", ts=old, tenant="t2", model="keep"),
        ]
    )
    evals = EvalStore(store)
    online = evals.ensure_online_run("t1", "m1")
    evals.write_results(online, "t1", "m1", [item("old1", old), item("old2", old), item("new1", recent)])
    kept_online = evals.ensure_online_run("t2", "keep")
    evals.write_results(kept_online, "t2", "keep", [item("keep1", old)])
    shadow = evals.create_run("t1", "m1", kind="shadow", run_id="shadow:exp_1:t1", arm="shadow")
    evals.write_results(shadow, "t1", "m1", [item("old1", old, scored=False), item("new1", recent, scored=False)])
    offline = evals.create_run(None, "m1")
    evals.write_results(offline, None, "m1", [item("0000", old)])  # a baseline run gates compare against
    feedback(store, "fb_old1", "old1", "u", ts=old)
    feedback(store, "fb_old2", "old2", None, ts=old)
    feedback(store, "fb_new1", "new1", "u", ts=recent)
    feedback(store, "fb_keep1", "keep1", "u", ts=old, tenant="t2", model="keep")
    retention = RetentionConfig(
        default_days=30, rules=[RetentionRule(tenant="t2", model="keep", days=365)], batch_size=1
    )

    deleted = store.delete_expired(retention, now=NOW)

    # 2 requests, 3 live items (online old1/old2, shadow old1; their 4 scores go uncounted), 2 feedback rows.
    assert deleted == 2 + 3 + 2
    assert sorted(rows(store, "SELECT id FROM requests")) == [("keep1",), ("new1",)]
    assert sorted(rows(store, "SELECT run_id, item_key FROM eval_items")) == sorted(
        [(offline, "0000"), (online, "new1"), (kept_online, "keep1"), (shadow, "new1")]
    )
    assert sorted(rows(store, "SELECT DISTINCT run_id, item_key FROM eval_scores")) == sorted(
        [(offline, "0000"), (online, "new1"), (kept_online, "keep1")]
    )
    assert sorted(rows(store, "SELECT id FROM feedback")) == [("fb_keep1",), ("fb_new1",)]
    # What reads inside the window still finds its rows (the quality SLI's and the reports' queries).
    assert evals.score_mean("m1", "quality", NOW - 7 * DAY, NOW, ANY_TENANT) == (1.0, 1)
    assert store.delete_expired(retention, now=NOW) == 0
