"""Build a dataset from the request log: production traffic becomes the test set.

Records are read with the admin API's own query (``RecordQuery``) and payloads opened by the
``RecordLog`` (decrypted when encryption is on). Each conversation and the recorded answer (kept as
the candidate reference) pass the guard's PII detector and are redacted (``<EMAIL>``); exact
duplicates (same scrubbed input) are dropped, newest kept; an optional seeded sample follows.
Calls the gateway itself made for evaluation (``metadata.purpose == "eval"``) are never taken.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opsgate.evals.dataset import DatasetItem, ItemError, parse_item
from opsgate.store.query import RecordQuery
from opsgate.store.sql import SqlRecordStore

MAX_SCAN = 200_000  # records read at most for one dataset
Scrubber = Callable[[str], str]


@dataclass
class LogSelection:
    """What to take from the log (the CLI's and API's filters)."""

    query: RecordQuery
    feedback: str | None = None  # negative | positive
    sample: int | None = None
    seed: int = 0


@dataclass
class FromLogsResult:
    """The items and how many records were read, skipped (no usable text) and dropped as duplicates."""

    items: list[DatasetItem]
    read: int = 0
    unusable: int = 0
    duplicates: int = 0
    redacted: int = 0
    notes: list[str] = field(default_factory=list)


def pii_scrubber() -> Scrubber:
    """The guard's PII detector with its default kinds, replacing each finding by ``<KIND>``."""
    from opsgate.domain.guard_config import PiiScannerConfig
    from opsgate.guard.pii import PiiDetector, replace_findings

    config = PiiScannerConfig(scanner="pii")
    detector = PiiDetector(config.entities, config.phone_regions, config.ner_budget_ms / 1000, config.ner)

    def scrub(text: str) -> str:
        findings = detector.find(text)
        return replace_findings(text, findings, lambda f: f"<{f.kind.upper()}>") if findings else text

    return scrub


def feedback_ids(store: SqlRecordStore, positive: bool, since: float | None, tenant: str | None) -> set[str]:
    """Request ids with feedback of the given polarity."""
    where = "positive = ?"
    params: list[Any] = [1 if positive else 0]
    if since is not None:
        where += " AND ts >= ?"
        params.append(since)
    if tenant is not None:
        where += " AND tenant = ?"
        params.append(tenant)
    with store.connection() as conn:
        rows = store.execute(conn, f"SELECT request_id FROM feedback WHERE {where}", params).fetchall()
    return {r[0] for r in rows}


def item_from_record(record: dict[str, Any], scrub: Scrubber) -> tuple[DatasetItem | None, bool]:
    """A record's conversation and answer as an item (None when it has no usable text); and whether
    anything was redacted."""
    request = record.get("request")
    if not isinstance(request, dict) or record.get("endpoint") not in ("chat", "completion"):
        return None, False
    changed = False

    def clean(text: str) -> str:
        nonlocal changed
        out = scrub(text)
        changed = changed or out != text
        return out

    data: dict[str, Any] = {"metadata": {"request_id": record.get("id"), "model": record.get("model")}}
    if record.get("endpoint") == "chat":
        messages = []
        for message in request.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):  # content parts: keep the text ones
                parts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
                content = "\n".join(str(p.get("text", "")) for p in parts)
            if not isinstance(content, str) or message.get("role") not in ("system", "user", "assistant"):
                return None, False
            messages.append({"role": message["role"], "content": clean(content)})
        data["messages"] = messages
    else:
        prompt = request.get("prompt")
        if not isinstance(prompt, str):
            return None, False
        data["prompt"] = clean(prompt)
    output = record.get("output_text")
    if isinstance(output, str) and output.strip():
        data["reference"] = clean(output)
    try:
        return parse_item(data), changed
    except ItemError:
        return None, False


def build_from_logs(
    records: Iterable[dict[str, Any]],
    selection: LogSelection,
    scrub: Scrubber,
    allowed_ids: set[str] | None = None,
) -> FromLogsResult:
    """Items from records (newest first, as the log returns them): scrubbed, de-duplicated, sampled."""
    result = FromLogsResult([])
    seen: set[str] = set()
    for record in records:
        result.read += 1
        if result.read > MAX_SCAN:
            result.notes.append(f"stopped after {MAX_SCAN} records; narrow the filters")
            break
        if allowed_ids is not None and record.get("id") not in allowed_ids:
            continue
        metadata = record.get("metadata")
        if isinstance(metadata, dict) and metadata.get("purpose") == "eval":
            continue  # our own evaluation calls
        item, redacted = item_from_record(record, scrub)
        if item is None:
            result.unusable += 1
            continue
        key = item.input_hash()
        if key in seen:
            result.duplicates += 1
            continue
        seen.add(key)
        result.redacted += redacted
        result.items.append(item)
    if selection.sample is not None and selection.sample < len(result.items):
        chosen = sorted(random.Random(selection.seed).sample(range(len(result.items)), selection.sample))
        result.items = [result.items[i] for i in chosen]
    result.items.reverse()  # oldest first reads naturally as a test set
    return result
