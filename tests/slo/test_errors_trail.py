"""Error signatures and groups."""

from __future__ import annotations

import time

from opsgate.errors_trail import error_groups, normalise_message, signature
from opsgate.store.sql import SqlRecordStore
from tests.slo.conftest import make_record


def test_normalise_strips_what_varies_per_request() -> None:
    a = normalise_message("upstream returned 503 for https://api.example.com/v1/x?id=9 req_8f2a9c01d after 1.5s")
    b = normalise_message("upstream returned 503 for https://other.example.com/v1/y req_77aa0be13 after 30s")
    assert a == b == "upstream returned <n> for <url> <id> after <n>s"
    assert normalise_message("user 'alice@example.com' at 10.0.0.12:5432 id 3f2c9a1e-1111-2222-3333-444455556666") == (
        "user <str> at <ip> id <id>"
    )
    assert signature("server_error", "m#0", a) == signature("server_error", "m#0", b)
    assert signature("server_error", "m#1", a) != signature("server_error", "m#0", a)


def test_groups_count_examples_and_trend(store: SqlRecordStore) -> None:
    now = time.time()
    failing = [
        make_record(now - 60 * i, status=502, error_type="upstream_error", error_message=f"timeout after {i}ms")
        for i in range(1, 8)
    ]
    other = [make_record(now - 30, status=400, error_type="invalid_request_error", error_message="bad 'x'")]
    store.write_batch([*failing, *other, make_record(now - 10)])
    result = error_groups(store, now - 3600, now=now)
    groups = result["data"]
    assert [g["count"] for g in groups] == [7, 1]
    top = groups[0]
    assert top["message"] == "timeout after <n>ms" and top["deployment"] == "m#0"
    assert top["examples"][0] == failing[0]["id"]  # newest first
    assert sum(top["trend"]) == 7 and len(top["trend"]) == 24
    assert top["first_seen"] < top["last_seen"]
    assert error_groups(store, now - 3600, tenant="nobody", now=now)["data"] == []
