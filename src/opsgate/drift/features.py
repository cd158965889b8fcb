"""What the drift engine reads of one request record: the input and output features it summarises.

Input: prompt length (characters of the whole input), the language of the last user message, which
input guard scanners failed. Output (only for answered requests): answer length, finish reason,
refusal (``looks_like_refusal``, the eval scorer's detector; an empty answer counts), which output
guard scanners failed (toxicity, pii, confidence, ...). The texts to embed ride along, cut to
``TEXT_CHARS``; they are never stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from opsgate.evals.scorers_free import looks_like_refusal

# Synthetic traffic the gateway makes itself: not what users send, so not drift. Only an operator's
# request (no tenant; auth off has none) may claim it: a tenant saying "sentinel" is still counted.
SYNTHETIC_PURPOSES = frozenset({"sentinel", "bias", "eval"})
PURPOSE_KEYS = ("purpose", "opsgate_purpose")  # metadata keys: drift/sentinel and bias/explain tags
TEXT_ENDPOINTS = frozenset({"chat", "completion"})
LANGUAGE_CHARS = 500  # enough text for a language guess; longer prompts are cut
MIN_LANGUAGE_CHARS = 12  # shorter texts get "short": a guess on a greeting is noise
# What is kept of a prompt or an answer: MiniLM reads 256 tokens, the language guess 500 characters,
# the refusal detector 300. A 4 MB prompt costs its length and these characters, nothing more.
TEXT_CHARS = 2000
_CATEGORY = re.compile(r"^[a-z][a-z0-9_.-]{0,39}$")
# The model alias name grammar (domain/config.py): keys built from anything else are never stored.
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$")
MAX_TENANT_CHARS = 200
OBSERVATION_OVERHEAD = 400  # bytes of an Observation beside its texts (CPython objects)
OTHER = "other"


@dataclass(slots=True)
class Observation:
    """One record's drift features, keyed by where they go (texts cut to ``TEXT_CHARS``)."""

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

    @property
    def held_bytes(self) -> int:
        """About how much memory this observation holds (the collector's queue bound)."""
        texts = len(self.prompt_text or "") + len(self.answer_text or "")
        return OBSERVATION_OVERHEAD + 4 * texts  # up to 4 bytes a character (CPython's widest strings)


def category(value: object) -> str:
    """A bounded, printable category name: unknown shapes become ``other``."""
    if isinstance(value, str) and _CATEGORY.match(value):
        return value
    return OTHER if value is not None else "none"


def alias_name(value: object) -> str | None:
    """``value`` if it is a well-formed alias name (what may become a key in the drift tables)."""
    return value if isinstance(value, str) and _ALIAS.match(value) else None


def safe_tenant(value: object) -> str | bool | None:
    """The tenant id if it can be stored (printable, no NUL, at most 200 characters), None for no
    tenant, False for an id that cannot be a key (the record is left out)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and len(value) <= MAX_TENANT_CHARS and value.isprintable():
        return value
    return False


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
                    return "\n".join(parts)[:TEXT_CHARS] if parts else None
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


def synthetic(record: dict[str, Any], tags: dict[str, Any], tenant: str | None) -> bool:
    """Whether an operator's request (no tenant) says it is the gateway's own synthetic traffic."""
    if tenant is not None:
        return False  # a tenant cannot hide its traffic from drift by claiming a purpose
    metadata = record.get("metadata")
    purposes = [metadata.get(key) for key in PURPOSE_KEYS] if isinstance(metadata, dict) else []
    purposes.append(tags.get("purpose"))
    return any(isinstance(p, str) and p in SYNTHETIC_PURPOSES for p in purposes)


def extract(record: dict[str, Any]) -> Observation | None:
    """The cheap features of a chat/completion record, texts cut to ``TEXT_CHARS`` (``complete`` adds
    refusal phrases and the language); None for records drift does not read. Cheap enough for the
    request path (the collector's write: about 4 us a record)."""
    alias = alias_name(record.get("model"))
    if alias is None or record.get("endpoint") not in TEXT_ENDPOINTS:
        return None
    tenant = safe_tenant(record.get("tenant"))
    if tenant is False:
        return None
    assert tenant is None or isinstance(tenant, str)
    raw_tags = record.get("tags")
    tags: dict[str, Any] = raw_tags if isinstance(raw_tags, dict) else {}
    if synthetic(record, tags, tenant):
        return None
    ts = record.get("ts")
    obs = Observation(alias=alias, tenant=tenant, ts=float(ts) if isinstance(ts, int | float) else 0.0)
    text = record.get("input_text")
    if isinstance(text, str):
        obs.prompt_chars = len(text)
        obs.prompt_text = (last_user_text(record) or text)[:TEXT_CHARS]
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
            obs.refused = not answer or answer.isspace()  # empty counts; phrases: see complete()
            obs.answer_text = answer[:TEXT_CHARS]
    return obs


def complete(obs: Observation, *, language: bool = True) -> None:
    """The features that cost CPU, off the request path: the refusal phrases (about 5 us; the kept
    ``TEXT_CHARS`` hold the detector's whole window) and, if asked, the prompt's language."""
    if obs.answer_text is not None and not obs.refused:
        obs.refused = looks_like_refusal(obs.answer_text)
    if language and obs.prompt_text is not None:
        obs.language = detect_language(obs.prompt_text)


def observe(record: dict[str, Any], *, language: bool = True) -> Observation | None:
    """The features of a chat/completion record with a model, or None for records drift does not read."""
    obs = extract(record)
    if obs is not None:
        complete(obs, language=language)
    return obs
