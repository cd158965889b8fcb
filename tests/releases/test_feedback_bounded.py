"""The rollback watcher's feedback read is bounded (probe-e p5: a service key stored 2,000 ratings on one
request by varying ``user``, and every watcher tick fetched each of them, three times). Raters per request
are capped now (``slo.feedback.MAX_RATERS_PER_REQUEST``), but not the requests a tenant rates: the ratings
are summed in SQL, one row per arm and tenant, still one rating per request: its latest."""

from __future__ import annotations

from typing import Any

from opsgate.releases import metrics
from opsgate.slo.feedback import MAX_RATERS_PER_REQUEST, Feedback, store_feedback
from opsgate.store.sql import SqlRecordStore
from tests.releases.conftest import start_canary, write_records

HOSTILE_REQUESTS = 10


class _CountingRows:
    """Wraps a cursor: counts the rows a statement hands back."""

    def __init__(self, cursor: Any, seen: list[int]) -> None:
        self.cursor, self.seen = cursor, seen

    def fetchall(self) -> list[Any]:
        rows = list(self.cursor.fetchall())
        self.seen.append(len(rows))
        return rows

    def fetchone(self) -> Any:
        self.seen.append(1)
        return self.cursor.fetchone()


def test_many_users_ratings_of_one_request_are_counted_once_and_not_fetched(
    any_store: SqlRecordStore, monkeypatch: Any
) -> None:
    experiment = start_canary(any_store)
    hostile = write_records(any_store, experiment, "canary", "evil", HOSTILE_REQUESTS)
    write_records(any_store, experiment, "control", "evil", 3)
    others = write_records(any_store, experiment, "canary", "good", 3)
    record = {"tenant": "evil", "model": "up", "deployment": None}
    for rid in hostile:  # as many raters as each request takes (each one's row kept), the latest "up"
        for i in range(MAX_RATERS_PER_REQUEST - 1):
            store_feedback(any_store, Feedback(rid, "down", None, False, None, f"sock-{i}"), record)
        store_feedback(any_store, Feedback(rid, "up", None, True, None, "last"), record)
    for rid in others:
        store_feedback(any_store, Feedback(rid, "down", None, False, None, None), {**record, "tenant": "good"})
    original = any_store.execute
    fetched: dict[str, list[int]] = {}

    def counting(conn: Any, statement: str, params: Any = ()) -> Any:
        return _CountingRows(original(conn, statement, params), fetched.setdefault(statement, []))

    monkeypatch.setattr(any_store, "execute", counting)
    canary = metrics.collect(any_store, "up", experiment, 0.0)["canary"]
    assert (canary.rated, canary.positive) == (HOSTILE_REQUESTS + 3, HOSTILE_REQUESTS)
    assert (canary.tenants["evil"].rated, canary.tenants["evil"].positive) == (HOSTILE_REQUESTS, HOSTILE_REQUESTS)
    assert (canary.tenants["good"].rated, canary.tenants["good"].positive) == (3, 0)
    feedback_rows = [n for statement, counts in fetched.items() if "feedback" in statement for n in counts]
    assert feedback_rows and max(feedback_rows) <= 4  # (arm, tenant) pairs, not the 163 ratings
