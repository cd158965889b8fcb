"""The record's token columns: what an upstream's usage object becomes (``RecordStage._usage``)."""

from __future__ import annotations

import itertools
from typing import Any

from opsgate.domain.pricing import MAX_COUNT, stored_count
from opsgate.pipeline.record import RecordStage

ODD = [None, 0, 1, 7, MAX_COUNT, MAX_COUNT + 1, -1, 2**64, True, False, 1.0, 1.5, -0.0, float("nan"), float("inf")]
ODD += ["5", {"n": 1}, [1]]


def reference(usage: Any) -> dict[str, Any]:
    """The columns and tags as the stage built them before its fast path (one dict, one loop)."""
    record: dict[str, Any] = {"tags": None}
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    sent = {
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "cached_tokens": details.get("cached_tokens") if isinstance(details, dict) else None,
    }
    for column, value in sent.items():
        record[column] = stored_count(value)
    if any(record[c] is None and v is not None for c, v in sent.items()):
        tags = record.get("tags")
        record["tags"] = {**(tags if isinstance(tags, dict) else {}), "usage_not_counts": True}
    return record


def test_usage_columns_are_as_before_for_odd_values() -> None:
    cases: list[Any] = [None, "text", [], {}]
    for prompt, completion in itertools.product(ODD, repeat=2):
        cases.append({"prompt_tokens": prompt, "completion_tokens": completion})
    for cached in ODD:
        cases.append({"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": cached}})
    cases.append({"prompt_tokens": 3, "prompt_tokens_details": "not a dict"})
    for usage in cases:
        record: dict[str, Any] = {"tags": None}
        RecordStage._usage(record, usage)
        expected = reference(usage)
        assert list(record) == list(expected), usage
        assert repr(record) == repr(expected), usage  # repr: NaN and -0.0 compare as written, types too
