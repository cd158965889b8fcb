"""Where a guarded stream is cut into windows, and the chunk plumbing around them.

The stage holds a stream's text back and scans it window by window, so a window cut must not split
something a window-scope scanner (PII, secrets) has to see whole. A cut goes after the last line or
sentence end; with none, once the text held is 4 windows long, at a space. Either way never inside a
run of digits and separators ("4111 1111 1111 1111", "+1 415 555 0199", an IBAN's groups): a card cut
at its inner space left in two windows, neither of them a card, and reached the client raw
(probe-guard finding 6). Nor after a line with a digit or a trailing comma: an address's lines must
reach the scanner together. With no such place by 16 windows (a run of digits that long), the cut falls
before the run, and failing that at the last space, so the text held stays bounded.
"""

from __future__ import annotations

import re
from typing import Any

from opsgate.domain.context import Chunk

# A line or sentence end.
_BOUNDARY = re.compile(r"\n|[.!?](?=\s)")
# Digits with the separators identifiers are written with (spaces, not line breaks) between them.
_SEPARATORS = " \t-./()+"
_DIGIT_RUN = re.compile(r"\d(?:[ \t\-./()+]*\d)*")
_RUN_CHARS = frozenset("0123456789" + _SEPARATORS)
# An address line: short, and none of the characters code and markup are made of.
_ADDRESS_LINE_CHARS = 160
_ADDRESS_LINES = 3  # address-like line ends a cut may pass over, from the end of what is held
_SENTENCE_END = re.compile(r"[.!?]\s")
_CODE_FREE = re.compile(r"[^=;{}\[\]<>|`*_$@]*")


def _inside_run(buffer: str, position: int) -> bool:
    """Whether cutting before ``buffer[position]`` splits a run of digits and separators (one that reaches
    the end of what is held may go on in the next chunk)."""
    left = position - 1
    while left >= 0 and buffer[left] in _SEPARATORS:
        left -= 1
    if left < 0 or not buffer[left].isdigit():
        return False
    right = position
    while right < len(buffer) and buffer[right] in _SEPARATORS:
        right += 1
    return right == len(buffer) or buffer[right].isdigit()


def _may_go_on(buffer: str, newline: int) -> bool:
    """Whether the line ending at ``buffer[newline]`` may go on in the next one, as a postal address does
    ("221B Baker Street" / "London NW1 6XE"): a short line that ends with a comma or holds a digit, and no
    code. Cut there, each line was scanned alone and neither was an address: the city and postcode
    reached the client raw. Code and tables (digits on most lines) keep their line cuts."""
    start = buffer.rfind("\n", 0, newline) + 1
    for sentence_end in _SENTENCE_END.finditer(buffer, start, newline):
        start = sentence_end.end()  # the line's last sentence: an address may follow prose on its line
    line = buffer[start:newline].strip()
    if not line or len(line) > _ADDRESS_LINE_CHARS or not _CODE_FREE.fullmatch(line):
        return False
    return line.endswith(",") or any(char.isdigit() for char in line)


def may_cut_now(buffer: str, added: int, window: int) -> bool:
    """Whether the last ``added`` characters could have made a cut possible: they end a line or sentence,
    or the text held has reached the size where a cut no longer waits for one. Saves a walk over the
    held text per chunk while a window waits (lines of logs or CSV, a few characters a chunk)."""
    if len(buffer) >= 4 * window or len(buffer) - added < window:
        return True  # past the size where a cut stops waiting, or just filled: the text held may have a place
    if buffer[-added - 1] in _RUN_CHARS:
        return True  # a run of digits may have ended, and a boundary it blocked be free now
    tail = buffer[-added - 1 :]  # with the character before: a sentence end completed by a space
    if "\n" in tail:
        return True
    return ("." in tail or "!" in tail or "?" in tail) and _BOUNDARY.search(tail) is not None


def cut(buffer: str, window: int) -> int:
    """Where to cut a full window (0: not yet), never inside a run of digits and separators, nor after a
    line an address may go on from."""
    deferred = 0
    for match in reversed(list(_BOUNDARY.finditer(buffer))):
        end = match.end()
        if _inside_run(buffer, end):
            continue
        if match.group() == "\n" and deferred < _ADDRESS_LINES and _may_go_on(buffer, match.start()):
            deferred += 1  # an address is a few lines: past these, digits on every line (logs, CSV) cut as before
            continue
        if deferred and end < window and len(buffer) < 4 * window:
            return 0  # lines held back for an address: wait for a window's worth before them, not a line at a time
        return end
    if len(buffer) < 4 * window:
        return 0
    space = buffer.rfind(" ")
    while space > 0:
        if not _inside_run(buffer, space + 1):
            return space + 1
        space = buffer.rfind(" ", 0, space)
    if len(buffer) < 16 * window:
        return 0
    runs = [match.start() for match in _DIGIT_RUN.finditer(buffer)]
    if runs and runs[-1] > 0:
        return runs[-1]
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


def logprob_entries(logprobs: Any) -> list[dict[str, Any]]:
    """Per-token entries from either shape: chat (``content``) or legacy completions (parallel lists)."""
    if not isinstance(logprobs, dict):
        return []
    if isinstance(logprobs.get("content"), list):
        return [e for e in logprobs["content"] if isinstance(e, dict)]
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or [None] * len(values)
    return [
        {"logprob": v, "top_logprobs": [{"logprob": lp} for lp in (t or {}).values()]}
        for v, t in zip(values, tops, strict=False)
        if v is not None
    ]
