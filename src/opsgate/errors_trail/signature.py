"""Error signatures: what makes two failures "the same error" for grouping.

The message is normalised so that what varies per request — URLs, ids, hashes, numbers, quoted
values — does not split one cause into thousands of groups.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

# Order matters: URLs and emails before ids, ids before bare numbers.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE), "<url>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), "<email>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE), "<id>"),
    # Prefixed ids (req_8f2a…, chatcmpl-9x…): the tail has a digit, so "rate-limited" stays a word.
    (re.compile(r"\b(?:[a-z]+[_-])+(?=[A-Za-z]*\d)[A-Za-z0-9]{6,}\b"), "<id>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.IGNORECASE), "<id>"),  # hex ids and hashes
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"'[^']{1,200}'|\"[^\"]{1,200}\""), "<str>"),
    (re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE), "<n>"),
    (re.compile(r"\s+"), " "),
)
MAX_MESSAGE = 300


@lru_cache(maxsize=4096)
def normalise_message(message: str | None) -> str:
    """The message with per-request details replaced by placeholders (``<url>``, ``<id>``, ``<n>`` …)."""
    text = message or ""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text.strip()[:MAX_MESSAGE]


def signature(error_type: str | None, deployment: str | None, message: str | None) -> str:
    """A short stable id for (type, deployment, normalised message)."""
    key = "\x1f".join((error_type or "", deployment or "", normalise_message(message)))
    return hashlib.sha256(key.encode()).hexdigest()[:16]
