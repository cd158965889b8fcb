"""JSON for records: any value a client can send serialises, and every line is one a store can take.

Two jobs, both about input the gateway does not control:

- ``record_json``: orjson refuses integers beyond 64 bits, strings holding lone surrogates and
  non-string dict keys. A record must never fail to serialise (that would answer a 500 and lose the
  record), so such values are turned into their nearest storable form: big integers into their
  decimal string, lone surrogates into U+FFFD, other objects into ``str(value)``.
- ``storable_json_text``: PostgreSQL's ``text`` and ``jsonb`` reject NUL (``\\u0000``) and
  unpaired surrogate escapes, and SQLite's ``json_extract`` cuts a string at NUL. A batch is made
  storable by replacing each with U+FFFD (the Unicode replacement character), on both stores alike:
  the rest of the record is kept exactly, and the replacement is visible to whoever reads it, rather
  than a refused record or a silently shortened string. (A JSON payload stored as a string, such as
  ``request``, keeps its NUL: there it is the escaped text ``\\u0000``.)
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1
# An escape PostgreSQL refuses: NUL, a valid surrogate pair (kept as is), or a lone surrogate. The
# pattern starts with a literal backslash, so the regex engine skips to candidates at C speed (a
# lookbehind in front made it test every position: ~0.5 s of the writer thread holding the GIL for
# one 4 MB prompt with a single NUL). Whether the backslash starts an escape (an even run of
# backslashes before it) is checked per candidate.
_REFUSED_ESCAPE = re.compile(
    r"\\u(0000|[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def _lenient(value: Any) -> Any:
    """``value`` with everything orjson refuses replaced by its nearest storable form."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _UINT64_MAX else str(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: each becomes U+FFFD
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if isinstance(value, dict):
        return {_lenient(k if isinstance(k, str) else str(k)): _lenient(v) for k, v in value.items()}  # keys too
    if isinstance(value, list | tuple | set | frozenset):
        return [_lenient(item) for item in value]
    return _lenient(str(value))


def record_json(value: Any) -> bytes:
    """``value`` as JSON bytes, whatever it holds (see the module docstring); never raises for content."""
    try:
        return orjson.dumps(value, default=str)
    except (orjson.JSONEncodeError, TypeError):
        # The slow path, only for odd input: walk the value and make every part serialisable.
        return orjson.dumps(_lenient(value), default=str)


def storable_text(text: str) -> str:
    """One string as the stores keep it: NUL and lone surrogates as U+FFFD (a user id to erase, say)."""
    return str(_lenient(text)).replace("\x00", "\ufffd")


def _escaped(text: str, at: int) -> bool:
    """Whether the backslash at ``at`` is itself escaped (an odd run of backslashes before it)."""
    if at == 0 or text[at - 1] != "\\":  # the usual case
        return False
    span = 64
    while True:  # measure the run in C, in growing steps (a hostile run can be megabytes long)
        start = max(0, at - span)
        before = text[start:at]
        run = len(before) - len(before.rstrip("\\"))
        if run < len(before) or start == 0:
            return run % 2 == 1
        span *= 4


def storable_json_text(text: str) -> str:
    """JSON text with NUL and lone-surrogate escapes replaced by U+FFFD, for PostgreSQL."""
    if "\\u0000" not in text and "\\ud" not in text and "\\uD" not in text:  # the common case: C scans only
        return text
    parts: list[str] = []
    done = 0
    search = _REFUSED_ESCAPE.search
    match = search(text)
    while match is not None:
        start = match.start()
        if _escaped(text, start):  # "\\u0000" is text, not an escape: look again from its "u"
            match = search(text, start + 1)
            continue
        if len(match.group(1)) == 4:  # NUL or a lone surrogate (a pair is a valid character: kept)
            parts += (text[done:start], "\\ufffd")
            done = match.end()
        match = search(text, match.end())
    parts.append(text[done:])
    return "".join(parts)
