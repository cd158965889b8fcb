"""Record values nested deeper than orjson writes, cut so the record keeps everything else.

orjson stops at 254 levels, and ``record_json``'s lenient walk keeps the nesting, so it cannot help.
A client's body is refused well before that depth (validation), but an upstream's answer is whatever
its JSON parser accepted (orjson reads up to 1024 levels): its ``content`` or ``finish_reason`` can
be too deep to write. ``cut_nesting`` keeps the first ``MAX_DEPTH`` levels as they are and stores
each part below that as its JSON text (or a marker when even that cannot be made), so the record
is written with as much of the answer as can be kept.
"""

from __future__ import annotations

import json
from typing import Any

from opsgate.store.encoding import record_json

# Well under orjson's 254 with room for the record around the value, far above any sane answer.
MAX_DEPTH = 128
CUT_MARK = "<opsgate: nested too deep to record>"


def _as_text(value: Any) -> str:
    # Python's encoder has no fixed depth limit, only the interpreter's recursion limit.
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (RecursionError, ValueError, TypeError):
        return CUT_MARK


def cut_nesting(value: Any, depth: int = MAX_DEPTH) -> Any:
    """``value`` with every list or dict below ``depth`` levels replaced by its JSON text."""
    if isinstance(value, dict):
        if depth <= 0:
            return _as_text(value)
        return {key: cut_nesting(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        if depth <= 0:
            return _as_text(value)
        return [cut_nesting(item, depth - 1) for item in value]
    return value


def bounded_record_json(value: Any) -> bytes:
    """``record_json``, and for a value too deep for orjson the same value with its depth cut."""
    try:
        return record_json(value)
    except (TypeError, RecursionError):  # orjson: "Recursion limit reached"; the lenient walk: Python's own limit
        return record_json(cut_nesting(value))
