"""Text as a reader sees it: invisible characters dropped and fullwidth forms read as ASCII, with a map back.

"j\u200ba\u200bn\u200be@example.org", "jane.roe\uff20example.org" and "jane.\u00adroe@example.org" read as an
email to a person (and to the model) but not to the patterns (probe-guard finding 8). ``unhide`` gives the
text with zero-width and format characters and soft hyphens removed and the fullwidth ASCII forms
(U+FF01-U+FF5E, and the small commercial at) replaced by ASCII, and where each of its characters was in
the original, so a finding in it redacts the original span (hidden characters and all).

Only texts that hold such characters cost anything: an ASCII text is one ``str.isascii``, any other one
search of a character class.
"""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import NDArray

from opsgate.guard.pii_base import char_codes

# Invisible when rendered: soft hyphen, Mongolian vowel separator, zero-width space/non-joiner/joiner,
# left-to-right and right-to-left marks and embeddings, word joiner and invisible operators, the BOM.
_HIDDEN = "\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\ufeff"
_TABLE: dict[int, int | None] = {ord(char): None for char in _HIDDEN}
_TABLE.update({code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)})  # fullwidth ASCII forms
_TABLE[0xFE6B] = ord("@")  # small commercial at
_FOLDED = re.compile("[" + "".join(re.escape(chr(code)) for code in _TABLE) + "]")
_HIDDEN_CODES = np.array([ord(char) for char in _HIDDEN], dtype=np.uint32)


def unhide(text: str) -> tuple[str, NDArray[np.intp]] | None:
    """(the text as read, each of its characters' index in ``text``), or None where nothing is hidden."""
    if text.isascii() or _FOLDED.search(text) is None:
        return None
    codes = char_codes(text)
    kept = np.flatnonzero(~np.isin(codes, _HIDDEN_CODES))
    return text.translate(_TABLE), kept


def original_span(kept: NDArray[np.intp], start: int, end: int) -> tuple[int, int]:
    """The span of ``text`` that the span ``[start, end)`` of the text as read (``unhide``) came from."""
    return int(kept[start]), int(kept[end - 1]) + 1
