"""Per-request quality flags for the quality SLIs, computed once when the record is built.

A record carries ``quality_flags``, a bit set of what its guard verdicts and answer say; the rollup
tables count each bit (``store/rollups.py``), so a quality SLI is a ratio of two rollup sums:

======================  ===========================================  =====================================
bit                     set when                                     counted among
======================  ===========================================  =====================================
``SCANNED``             a guard policy scanned the request's input   (the injection rate's denominator)
``ANSWERED``            a chat/completion answer came back (< 400),  (the answer rates' denominator)
                        or the output guard judged one (a block)
``INJECTION``           input scanner ``prompt_injection`` failed    scanned requests, blocked ones too
``PII_LEAK``            output scanner ``pii`` failed                answered requests
``TOXIC``               output scanner ``toxicity`` failed           answered requests
``LOW_CONFIDENCE``      output scanner ``confidence`` failed         answered requests
                        (knowledge limit, from token logprobs)
``REFUSAL``             the answer refuses (the eval ``refusal``     answered requests
                        scorer's phrases in its first 300
                        characters, an OpenAI ``refusal`` field, or
                        finish_reason ``content_filter``)
======================  ===========================================  =====================================

A verdict counts whatever the scanner's action was (block, redact, warn, log): the SLI measures what
the model produced or the clients sent, not what the guard let through. A rate needs the scanner in
the request's guard policy; without it the bit is never set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opsgate.evals.scorers_free import looks_like_refusal
from opsgate.store.quality_schema import FLAG_COLUMNS

SCANNED = 1
ANSWERED = 2
INJECTION = 4
PII_LEAK = 8
TOXIC = 16
LOW_CONFIDENCE = 32
REFUSAL = 64
# The rollup column counting each bit (the quality SLI kinds read these).
COLUMN_OF = {bit: column for column, bit in FLAG_COLUMNS}
_ANSWER_ENDPOINTS = frozenset({"chat", "completion"})
# Output scanners whose failing verdict sets a bit.
_OUTPUT_BITS = {"pii": PII_LEAK, "toxicity": TOXIC, "confidence": LOW_CONFIDENCE}


def _failed(entries: Any, bits: Mapping[str, int]) -> int:
    """The bits of the scanners in ``entries`` (a record's guard verdict list) that failed."""
    flags = 0
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, dict) and entry.get("verdict") == "fail" and isinstance(entry.get("scanner"), str):
                flags |= bits.get(entry["scanner"], 0)
    return flags


def is_refusal(text: str | None, refusal: Any = None, finish_reason: str | None = None) -> bool:
    """Whether an answer refuses: a refusal phrase near its start, the API's refusal field, or a content filter."""
    if isinstance(refusal, str) and refusal.strip():
        return True
    if finish_reason == "content_filter":
        return True
    return isinstance(text, str) and looks_like_refusal(text)


def quality_flags(
    guard: Any,
    endpoint: str | None,
    status: int,
    text: str | None,
    refusal: Any = None,
    finish_reason: str | None = None,
) -> int:
    """The bit set of one request, from its guard tags (``ctx.tags["guard"]``), status and answer."""
    flags = 0
    output: Any = None
    if isinstance(guard, dict):
        entries = guard.get("input")
        if isinstance(entries, list) and entries:
            flags |= SCANNED | _failed(entries, {"prompt_injection": INJECTION})
        output = guard.get("output")
    if endpoint in _ANSWER_ENDPOINTS and (status < 400 or (isinstance(output, list) and output)):
        flags |= ANSWERED | _failed(output, _OUTPUT_BITS)
        if status < 400 and is_refusal(text, refusal, finish_reason):
            flags |= REFUSAL
    return flags
