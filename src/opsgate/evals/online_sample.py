"""What online evaluation keeps of a sampled record: the fields scoring needs, not the record.

A record holds the prompt twice (``input_text`` and ``request``) and the whole answer; queued as is,
multi-megabyte prompts behind a slow judge grew the process by gigabytes. An ``OnlineSample`` keeps
the prompt cut to ``INPUT_CHARS`` (what the judge reads, and what the item stores), the whole answer
(JSON validity needs all of it) and a few numbers; ``held_bytes`` is what the queue's byte bound counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

INPUT_CHARS = 8000  # of the prompt: a judge's context, not a copy of a 4 MB body
SAMPLE_OVERHEAD = 600  # bytes of a sample beside its texts (CPython objects)
_PARSE_LIMIT = 256 * 1024  # a payload still in JSON text is parsed on the loop only when this small


@dataclass(slots=True)
class OnlineSample:
    """One sampled answer, ready to score."""

    id: str | None
    tenant: str | None
    model: str
    input: str | None
    output: str | None
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    ts: float
    logprob_mean: float | None
    asked_json: bool
    user: str | None = None  # the record's user_id: an erasure of that user drops the item (EvalStore)

    @property
    def held_bytes(self) -> int:
        """About how much memory the sample holds (up to 4 bytes a character: CPython's widest strings)."""
        return SAMPLE_OVERHEAD + 4 * (len(self.input or "") + len(self.output or "") + len(self.user or ""))


def sample_of(record: dict[str, Any]) -> OnlineSample:
    """The sample of a record (cheap: a slice and a few lookups; payloads are dicts in a live record)."""
    text = record.get("input_text")
    output = record.get("output_text")
    ts = record.get("ts")
    return OnlineSample(
        id=None if record.get("id") is None else str(record.get("id")),
        tenant=record.get("tenant"),
        model=record.get("model") or "",
        input=text[:INPUT_CHARS] if isinstance(text, str) else None,
        output=output if isinstance(output, str) else None,
        latency_ms=record.get("latency_ms"),
        prompt_tokens=record.get("prompt_tokens"),
        completion_tokens=record.get("completion_tokens"),
        cost=record.get("cost"),
        ts=float(ts) if isinstance(ts, int | float) else time.time(),
        logprob_mean=_logprob_mean(record),
        asked_json=_asked_json(record),
        user=user if isinstance(user := record.get("user_id"), str) else None,
    )


def _payload(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str) and not value.startswith("enc:") and len(value) <= _PARSE_LIMIT:
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def _logprob_mean(record: dict[str, Any]) -> float | None:
    """The record keeps a logprob summary (mean, min); the mean gives the answer's confidence."""
    summary = (_payload(record.get("response")) or {}).get("logprobs")
    if isinstance(summary, dict) and isinstance(summary.get("mean"), int | float):
        return float(summary["mean"])
    return None


def _asked_json(record: dict[str, Any]) -> bool:
    request = _payload(record.get("request"))
    response_format = (request or {}).get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")
