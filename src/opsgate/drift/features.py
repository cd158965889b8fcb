"""What the drift engine reads of one request record: the input and output features it summarises.

Input: prompt length (characters of the whole input), the language of the last user message, which
input guard scanners failed. Output (only for answered requests): answer length, finish reason,
refusal (the evaluation scorer's phrase list), which output guard scanners failed (toxicity, pii,
confidence, ...). The texts to embed ride along; they are never stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from opsgate.evals.scorers_free import _REFUSAL, _REFUSAL_WINDOW

# Synthetic traffic the gateway makes itself: not what users send, so not drift.
SYNTHETIC_PURPOSES = frozenset({"sentinel", "bias", "eval"})
TEXT_ENDPOINTS = frozenset({"chat", "completion"})
LANGUAGE_CHARS = 500  # enough text for a language guess; longer prompts are cut
MIN_LANGUAGE_CHARS = 12  # shorter texts get "short": a guess on a greeting is noise
_CATEGORY = re.compile(r"^[a-z][a-z0-9_.-]{0,39}$")
OTHER = "other"


@dataclass(slots=True)
class Observation:
    """One record's drift features, keyed by where they go."""

    alias: str
    tenant: str | None
    ts: float
    prompt_chars: int | None = None
    language: str | None = None
    prompt_text: str | None = None
    input_scanned: bool = False
    input_failed: list[str] = field(default_factory=list)
    answered: bool = False
    answer_chars: int | None = None
    finish_reason: str | None = None
    refused: bool = False
    output_scanned: bool = False
    output_failed: list[str] = field(default_factory=list)
    answer_text: str | None = None


def category(value: object) -> str:
    """A bounded, printable category name: unknown shapes become ``other``."""
    if isinstance(value, str) and _CATEGORY.match(value):
        return value
    return OTHER if value is not None else "none"


def _failed(entries: object) -> tuple[bool, list[str]]:
    if not isinstance(entries, list):
        return False, []
    names = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("verdict") == "fail":
            names.append(category(entry.get("scanner")))
    return True, sorted(set(names))


def last_user_text(record: dict[str, Any]) -> str | None:
    """The last user message's text (what the user asked, without the system prompt), else the input."""
    request = record.get("request")
    messages = request.get("messages") if isinstance(request, dict) else None
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return content
                if isinstance(content, list):
                    parts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
                    return "\n".join(parts) if parts else None
    text = record.get("input_text")
    return text if isinstance(text, str) else None


def detect_language(text: str) -> str:
    """ISO 639-1 code by py3langid, or ``short`` for texts too short to tell."""
    sample = text[:LANGUAGE_CHARS]
    if sum(ch.isalpha() for ch in sample) < MIN_LANGUAGE_CHARS:
        return "short"
    import py3langid  # type: ignore[import-untyped]

    lang, _ = py3langid.classify(sample)
    return category(lang)


def is_refusal(text: str) -> bool:
    """Whether the answer refuses, by the same phrases as the ``refusal`` eval scorer (empty counts)."""
    return _REFUSAL.search(text[:_REFUSAL_WINDOW]) is not None or not text.strip()


def observe(record: dict[str, Any], *, language: bool = True) -> Observation | None:
    """The features of a chat/completion record with a model, or None for records drift does not read."""
    alias = record.get("model")
    if not isinstance(alias, str) or not alias or len(alias) > 200:
        return None
    if record.get("endpoint") not in TEXT_ENDPOINTS:
        return None
    tags = record.get("tags") if isinstance(record.get("tags"), dict) else {}
    assert isinstance(tags, dict)
    metadata = record.get("metadata")
    purpose = metadata.get("purpose") if isinstance(metadata, dict) else None
    if purpose in SYNTHETIC_PURPOSES or tags.get("purpose") in SYNTHETIC_PURPOSES:
        return None
    tenant = record.get("tenant")
    ts = record.get("ts")
    obs = Observation(
        alias=alias,
        tenant=tenant if isinstance(tenant, str) and tenant else None,
        ts=float(ts) if isinstance(ts, int | float) else 0.0,
    )
    text = record.get("input_text")
    if isinstance(text, str):
        obs.prompt_chars = len(text)
        prompt = last_user_text(record) or text
        obs.prompt_text = prompt
        if language:
            obs.language = detect_language(prompt)
    guard = tags.get("guard") if isinstance(tags.get("guard"), dict) else None
    if guard is not None:
        obs.input_scanned, obs.input_failed = _failed(guard.get("input"))
        obs.output_scanned, obs.output_failed = _failed(guard.get("output"))
    if record.get("status") == 200:
        obs.answered = True
        obs.finish_reason = category(record.get("finish_reason"))
        answer = record.get("output_text")
        if isinstance(answer, str):
            obs.answer_chars = len(answer)
            obs.refused = is_refusal(answer)
            obs.answer_text = answer
    return obs
