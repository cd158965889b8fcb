"""How stored records become what the dashboard shows (pure functions, no server)."""

from __future__ import annotations

from typing import Any

from opsgate.domain.principal import ANONYMOUS_OPERATOR, Principal
from opsgate.store.query import RecordQuery, decode_cursor, encode_cursor
from opsgate.ui import views

GUARD_TAGS = {
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "served_by": "up/0",
    "guard": {
        "input": [
            {"scanner": "pii", "verdict": "flag", "score": 0.97, "action": "redact", "ms": 0.12},
            {"scanner": "injection", "verdict": "pass", "score": 0.01, "action": "log", "ms": 0.3},
        ],
        "output": [{"scanner": "toxicity", "verdict": "block", "score": 0.9, "action": "block", "ms": 1.5}],
    },
}


def test_chat_messages_with_parts_and_tool_calls() -> None:
    request = {
        "model": "up",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is in"}, {"type": "image_url"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f"}}]},
        ],
    }
    detail = views.request_detail({"id": "r1", "request": request, "response": {"content": "A cat."}, "tags": None})
    assert [m.role for m in detail.messages] == ["system", "user", "assistant"]
    assert detail.messages[1].text == "What is in\n[image_url]"
    assert '"name":"f"' in detail.messages[2].text
    assert detail.output == "A cat."
    assert detail.parameters == {"temperature": 0.2}
    assert detail.guard == [] and detail.trace_id is None


def test_completion_prompt_and_embedding_inputs() -> None:
    assert [m.text for m in views.request_messages({"prompt": "Once upon"})] == ["Once upon"]
    assert [m.role for m in views.request_messages({"input": ["a", "b"]})] == ["input", "input"]
    # Payloads not kept (metadata_only): fall back to the indexed input text.
    detail = views.request_detail({"id": "r", "request": None, "input_text": "hello", "output_text": "hi"})
    assert [m.text for m in detail.messages] == ["hello"] and detail.output == "hi"


def test_guard_verdicts_and_trace_id_from_tags() -> None:
    detail = views.request_detail({"id": "r", "tags": GUARD_TAGS})
    assert detail.trace_id == GUARD_TAGS["trace_id"]
    assert [(g.direction, g.scanner, g.action) for g in detail.guard] == [
        ("input", "pii", "redact"),
        ("input", "injection", "log"),
        ("output", "toxicity", "block"),
    ]
    assert [g.is_event for g in detail.guard] == [True, False, True]
    assert detail.other_tags == {"served_by": "up/0"}


def test_guard_summary_counts_events_by_scanner_action_and_time() -> None:
    now = 10_000.0
    records = [
        {"id": "a", "ts": now - 10, "tags": GUARD_TAGS},
        {"id": "b", "ts": now - 3500, "tags": {"guard": {"input": [GUARD_TAGS["guard"]["input"][0]]}}},
        {"id": "c", "ts": now - 5, "tags": None},
    ]
    summary = views.guard_summary(records, now - 3600, now, buckets=6)
    assert summary.scanned == 3 and summary.total == 3
    assert dict(summary.by_scanner) == {"input:pii": 2, "output:toxicity": 1}
    assert dict(summary.by_action) == {"redact": 2, "block": 1}
    assert [n for _, n in summary.timeline] == [1, 0, 0, 0, 0, 2]


def _search_over(records: list[dict[str, Any]]) -> views.Search:
    """RecordLog.search over a list (newest first), with the store's cursor rule."""

    def search(query: RecordQuery) -> tuple[list[dict[str, Any]], str | None]:
        rows = sorted(records, key=lambda r: (r["ts"], r["id"]), reverse=True)
        if query.cursor is not None:
            rows = [r for r in rows if (r["ts"], r["id"]) < query.cursor]
        page = rows[: query.limit]
        more = len(rows) > query.limit
        return page, encode_cursor(page[-1]["ts"], page[-1]["id"]) if more else None

    return search


def test_guard_event_pages_cover_every_event_once_whole_records_at_a_time() -> None:
    hit = {"guard": {"input": [GUARD_TAGS["guard"]["input"][0]]}}
    two = {"guard": {"input": [GUARD_TAGS["guard"]["input"][0]], "output": GUARD_TAGS["guard"]["output"]}}
    records = [
        {"id": f"r{i:04d}", "ts": float(i), "tags": two if i % 7 == 0 else hit if i % 2 else None} for i in range(700)
    ]
    expected = [(r["id"], v.scanner) for r in reversed(records) for v in views.guard_verdicts(r["tags"]) if v.is_event]
    search, seen, pages, cursor = _search_over(records), [], 0, None
    while True:
        page = views.guard_event_page(search, RecordQuery(cursor=cursor and decode_cursor(cursor)), per_page=50)
        assert 50 <= len(page.events) <= 51 or page.next_cursor is None  # one record's second hit may spill over
        seen.extend((r["id"], v.scanner) for r, v in page.events)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected and pages > 1
    # A long clean stretch: a page view reads at most max_records and still offers the rest.
    clean = [{"id": f"c{i:05d}", "ts": float(i), "tags": None} for i in range(1000)]
    first = views.guard_event_page(_search_over([*records[:3], *clean]), RecordQuery(), max_records=300)
    assert first.events == [] and first.next_cursor is not None


def test_guard_badges_are_coloured_by_verdict_not_action() -> None:
    verdicts = views.guard_verdicts(GUARD_TAGS)
    assert [(v.action, v.badge) for v in verdicts] == [("redact", "bad"), ("log", "ok"), ("block", "bad")]
    passing_block = views.GuardVerdict("input", "banned_terms", "pass", 0.0, "block", 0.1)
    assert passing_block.badge == "ok"


def test_scope_query_keeps_tenants_apart() -> None:
    tenant = Principal(key_id="k1", tenant="acme", role="viewer")
    assert views.scope_query(RecordQuery(tenant="globex"), tenant).tenant == "acme"
    assert views.scope_query(RecordQuery(tenant="globex"), ANONYMOUS_OPERATOR).tenant == "globex"


def test_formatting() -> None:
    assert views.fmt_time(0) == "1970-01-01 00:00:00"
    assert views.fmt_ago(100.0, now=100.0 + 7200) == "2h"
    assert views.fmt_cost(None) == "—" and views.fmt_cost(0.5) == "$0.5000" and views.fmt_cost(0.0001) == "$0.000100"
