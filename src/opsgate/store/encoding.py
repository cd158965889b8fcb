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
# An escape PostgreSQL refuses, preceded by an even run of backslashes (an odd run would make the
# first backslash of ``\u`` itself escaped text, not an escape): NUL, a valid surrogate pair (kept
# as is), or a lone surrogate.
_REFUSED_ESCAPE = re.compile(
    r"(?<!\\)((?:\\\\)*)\\u(0000|[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|[dD][89a-fA-F][0-9a-fA-F]{2})"
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
        return {(k if isinstance(k, str) else str(k)): _lenient(v) for k, v in value.items()}
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


def _replace_refused(match: re.Match[str]) -> str:
    escape = match.group(2)
    if len(escape) > 4:  # a surrogate pair: a valid character
        return match.group(0)
    return match.group(1) + "\\ufffd"


def storable_text(text: str) -> str:
    """One string as the stores keep it: NUL and lone surrogates as U+FFFD (a user id to erase, say)."""
    return str(_lenient(text)).replace("\x00", "\ufffd")


def storable_json_text(text: str) -> str:
    """JSON text with NUL and lone-surrogate escapes replaced by U+FFFD, for PostgreSQL."""
    if "\\u" not in text:  # the common case: one scan in C, no regex
        return text
    return _REFUSED_ESCAPE.sub(_replace_refused, text)
