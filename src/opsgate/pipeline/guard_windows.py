"""Where a guarded stream is cut into windows, and the chunk plumbing around them.

The stage holds a stream's text back and scans it window by window, so a window cut must not split
something a window-scope scanner (PII, secrets) has to see whole. A cut goes after the last line or
sentence end; with none, once the text held is 4 windows long, at a space. Either way never inside a
run of digits and separators ("4111 1111 1111 1111", "+1 415 555 0199", an IBAN's groups): a card cut
at its inner space left in two windows, neither of them a card, and reached the client raw
(probe-guard finding 6). With no such place by 16 windows (a run of digits that long), the cut falls
before the run, and failing that at the last space, so the text held stays bounded.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

from opsgate.domain.context import Chunk

# A line or sentence end.
_BOUNDARY = re.compile(r"\n|[.!?](?=\s)")
# Digits with the separators identifiers are written with (spaces, not line breaks) between them.
_SEPARATORS = " \t-./()+"
_DIGIT_RUN = re.compile(r"\d(?:[ \t\-./()+]*\d)*")


def cut(buffer: str, window: int) -> int:
    """Where to cut a full window (0: not yet), never inside a run of digits and separators."""
    spans = [match.span() for match in _DIGIT_RUN.finditer(buffer)]
    if spans and not buffer[spans[-1][1] :].strip(_SEPARATORS):
        spans[-1] = (spans[-1][0], len(buffer) + 1)  # a run at the end of what is held may go on in the next chunk
    starts = [start for start, _ in spans]

    def safe(position: int) -> bool:
        index = bisect.bisect_left(starts, position) - 1  # the last run starting before ``position``
        return index < 0 or spans[index][1] <= position

    last = 0
    for match in _BOUNDARY.finditer(buffer):
        if safe(match.end()):
            last = match.end()
    if last:
        return last
    if len(buffer) < 4 * window:
        return 0
    space = buffer.rfind(" ")
    while space > 0:
        if safe(space + 1):
            return space + 1
        space = buffer.rfind(" ", 0, space)
    if len(buffer) < 16 * window:
        return 0
    if spans and spans[-1][0] > 0:
        return spans[-1][0]
    space = buffer.rfind(" ")
    return space + 1 if space > 0 else len(buffer)


def carries_more_than_role(choice: dict[str, Any]) -> bool:
    """Whether a content-less chunk carries something of its own (tool calls, a refusal)."""
    delta = choice.get("delta") or {}
    return any(value for key, value in delta.items() if key not in ("role", "content"))


def without_content(chunk: Chunk, chat: bool) -> Chunk:
    """The finish chunk with its text moved into the scanned buffer."""
    choices = []
    for choice in chunk.get("choices") or ():
        choice = dict(choice)
        if chat:
            choice["delta"] = {k: v for k, v in (choice.get("delta") or {}).items() if k != "content"}
        else:
            choice["text"] = ""
        choice["logprobs"] = None
        choices.append(choice)
    return {**chunk, "choices": choices}


def merge_logprobs(merged: dict[str, Any] | None, logprobs: Any) -> dict[str, Any] | None:
    """Logprobs of several chunks as one chunk's (lists concatenated), in either shape."""
    if not isinstance(logprobs, dict):
        return merged
    out = dict(merged or {})
    for name, value in logprobs.items():
        if isinstance(value, list):
            out[name] = [*(out.get(name) or []), *value]
        elif name not in out:
            out[name] = value
    return out
