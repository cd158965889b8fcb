"""What the dashboard's server-rendered pages show, shaped from records: plain functions, no HTTP.

Records come from the same store calls as the admin API (``RecordLog.search`` / ``RecordLog.get``);
these functions only pick out what a person reads: messages, output, usage, guard verdicts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from opsgate.domain.principal import Principal
from opsgate.store.query import RecordQuery, decode_cursor, encode_cursor

# Search filters the request-log page passes on to the store (a subset of the admin API's).
SEARCH_FILTERS = ("q", "model", "status", "since", "user", "deployment")
SINCE_CHOICES = ("15m", "1h", "6h", "24h", "7d", "30d")
# Guard events per page of the events table (older ones a link away), and how many records one page
# view reads at most while looking for them (a window of clean traffic must not be read whole).
GUARD_EVENTS_PER_PAGE = 50
GUARD_SCAN_PER_PAGE = 5000
# A verdict other than these is a hit: an "event" worth a person's look. The action is what the policy
# does on a hit, so a passing scanner configured to redact did nothing and is not an event.
GUARD_QUIET_VERDICTS = frozenset({"pass", "passed", "clean", "ok", "allow", "allowed", "safe", None})


@dataclass
class Message:
    """One message of a request as the detail page shows it."""

    role: str
    text: str
    name: str | None = None


@dataclass
class GuardVerdict:
    """One scanner's verdict on a request's input or output."""

    direction: str
    scanner: str
    verdict: str
    score: float | None
    action: str
    ms: float | None

    @property
    def is_event(self) -> bool:
        """Whether the scanner found something (not a quiet pass)."""
        return self.verdict not in GUARD_QUIET_VERDICTS

    @property
    def badge(self) -> str:
        """The verdict's colour: a hit is red whatever the policy did about it (redact, warn or log as
        much as block), a pass is green."""
        return "bad" if self.is_event else "ok"


@dataclass
class RequestDetail:
    """Everything the request detail page shows."""

    record: dict[str, Any]
    messages: list[Message]
    output: str | None
    guard: list[GuardVerdict]
    trace_id: str | None
    other_tags: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)


def scope_query(query: RecordQuery, principal: Principal) -> RecordQuery:
    """Restrict a search to the caller's tenant (an operator sees every tenant)."""
    if not principal.is_operator:
        query.tenant = principal.tenant
    return query


def fmt_time(ts: float | None) -> str:
    """An epoch time as ``2025-01-31 12:00:05`` UTC, or an empty string."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    """How long ago, roughly: ``42s``, ``5m``, ``3h``, ``2d``."""
    if ts is None:
        return ""
    seconds = max(0.0, (time.time() if now is None else now) - float(ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def fmt_cost(cost: float | None) -> str:
    """A cost in dollars with enough digits for fractions of a cent; ``—`` when unknown."""
    if cost is None:
        return "—"
    return f"${cost:.6f}" if cost < 0.01 else f"${cost:.4f}"


def _content_text(content: Any) -> str:
    """Text of an OpenAI message content: a string, or a list of parts (text parts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text":
                    pieces.append(str(part.get("text", "")))
                else:
                    pieces.append(f"[{part.get('type', 'part')}]")
            else:
                pieces.append(str(part))
        return "\n".join(pieces)
    return orjson.dumps(content).decode()


def request_messages(request: Any) -> list[Message]:
    """The conversation of a stored request body: chat messages, a prompt, or embedding inputs."""
    if not isinstance(request, dict):
        return []
    messages = request.get("messages")
    if isinstance(messages, list):
        out = []
        for message in messages:
            if not isinstance(message, dict):
                continue
            text = _content_text(message.get("content"))
            if message.get("tool_calls"):
                text = (text + "\n" if text else "") + orjson.dumps(message["tool_calls"]).decode()
            out.append(Message(str(message.get("role", "?")), text, message.get("name")))
        return out
    for key, role in (("prompt", "prompt"), ("input", "input")):
        value = request.get(key)
        if isinstance(value, str):
            return [Message(role, value)]
        if isinstance(value, list):
            return [Message(role, v if isinstance(v, str) else orjson.dumps(v).decode()) for v in value]
    return []


def guard_verdicts(tags: Any) -> list[GuardVerdict]:
    """The guard verdicts kept in a record's ``tags["guard"]`` (input first, then output)."""
    guard = tags.get("guard") if isinstance(tags, dict) else None
    if not isinstance(guard, dict):
        return []
    out = []
    for direction in ("input", "output"):
        entries = guard.get(direction)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            score, ms = entry.get("score"), entry.get("ms")
            out.append(
                GuardVerdict(
                    direction=direction,
                    scanner=str(entry.get("scanner", "?")),
                    verdict=str(entry.get("verdict", "")),
                    score=float(score) if isinstance(score, int | float) else None,
                    action=str(entry.get("action", "")),
                    ms=float(ms) if isinstance(ms, int | float) else None,
                )
            )
    return out


def request_detail(record: dict[str, Any]) -> RequestDetail:
    """Shape one stored record (payloads opened) for the detail page."""
    request = record.get("request")
    response = record.get("response")
    raw_tags = record.get("tags")
    tags: dict[str, Any] = raw_tags if isinstance(raw_tags, dict) else {}
    output = response.get("content") if isinstance(response, dict) else None
    if output is None:
        output = record.get("output_text")
    messages = request_messages(request)
    if not messages and record.get("input_text"):
        messages = [Message("input", str(record["input_text"]))]
    parameters: dict[str, Any] = {}
    if isinstance(request, dict):
        parameters = {k: v for k, v in request.items() if k not in ("messages", "prompt", "input", "model")}
    return RequestDetail(
        record=record,
        messages=messages,
        output=output if isinstance(output, str) else None,
        guard=guard_verdicts(tags),
        trace_id=str(tags["trace_id"]) if tags.get("trace_id") else None,
        other_tags={k: v for k, v in tags.items() if k not in ("guard", "trace_id")},
        parameters=parameters,
    )


@dataclass
class GuardSummary:
    """Guard events over a window of records: counts for the tiles and charts."""

    scanned: int
    total: int
    by_scanner: list[tuple[str, int]]
    by_action: list[tuple[str, int]]
    timeline: list[tuple[int, int]]  # (bucket start, events) for the chart


def guard_summary(records: list[dict[str, Any]], since: float, now: float, buckets: int = 48) -> GuardSummary:
    """Count guard events (scanner hits) by scanner, action and time."""
    by_scanner: Counter[str] = Counter()
    by_action: Counter[str] = Counter()
    step = max(1.0, (now - since) / buckets)
    timeline = [0] * buckets
    total = 0
    for record in records:
        for verdict in guard_verdicts(record.get("tags")):
            if not verdict.is_event:
                continue
            by_scanner[f"{verdict.direction}:{verdict.scanner}"] += 1
            by_action[verdict.action or verdict.verdict] += 1
            index = int((float(record["ts"]) - since) // step)
            timeline[min(max(index, 0), buckets - 1)] += 1
            total += 1
    return GuardSummary(
        scanned=len(records),
        total=total,
        by_scanner=by_scanner.most_common(),
        by_action=by_action.most_common(),
        timeline=[(int(since + i * step), count) for i, count in enumerate(timeline)],
    )


@dataclass
class GuardEventPage:
    """One page of the guard events table, newest first, and the cursor of the next (None: no more)."""

    events: list[tuple[dict[str, Any], GuardVerdict]]
    next_cursor: str | None


Search = Callable[[RecordQuery], tuple[list[dict[str, Any]], str | None]]


def guard_event_page(
    search: Search,
    query: RecordQuery,
    per_page: int = GUARD_EVENTS_PER_PAGE,
    max_records: int = GUARD_SCAN_PER_PAGE,
) -> GuardEventPage:
    """The guard events of the records ``query`` matches, from its cursor on, until ``per_page`` events.

    Whole records at a time (a record with two hits is never split across pages), so the next page's
    cursor is the last record read; past ``max_records`` records the page ends short, with a cursor.
    """
    events: list[tuple[dict[str, Any], GuardVerdict]] = []
    scanned = 0
    query.limit = 200
    while True:
        rows, cursor = search(query)
        for position, record in enumerate(rows):
            scanned += 1
            events.extend((record, v) for v in guard_verdicts(record.get("tags")) if v.is_event)
            if len(events) >= per_page or scanned >= max_records:
                more = position < len(rows) - 1 or cursor is not None
                return GuardEventPage(events, encode_cursor(record["ts"], record["id"]) if more else None)
        if cursor is None:
            return GuardEventPage(events, None)
        query.cursor = decode_cursor(cursor)
