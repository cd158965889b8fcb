"""Where the fast name recogniser's tokens are, from numpy passes over the character codes.

``pii_fast`` cuts a text with ``TOKEN`` (leading whitespace, then a word or one other character):
``findall`` of a 32 KB text makes ~7,000 strings and a Python step each gave them codes (~1.8 ms),
though only the capitalised words and the two tokens on each side of them are ever read. The same
tokens are the runs of three character classes — whitespace, word characters, others — so numpy
finds their bounds (~0.2 ms) and only the tokens read are cut out of the text.

A character's class is ``re``'s own answer (``\\s``, ``[\\w'\u2019&-]``), asked once per ASCII
character at import and once per distinct non-ASCII code point of a text (as ``pii_base.digit_runs``).
"""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import NDArray

from opsgate.guard.pii_base import char_codes

# The tokens: leading whitespace, then a word (inner apostrophes, hyphens, "&") or one other character. They
# cover the text without gaps but its trailing whitespace, so each token ends where the next one begins.
TOKEN = re.compile(r"\s*(?:[\w'\u2019&-]+|[^\w\s])")
_SPACE = re.compile(r"\s")
_WORD = re.compile(r"[\w'\u2019&-]")
_SPACE_CLASS, _WORD_CLASS, _OTHER_CLASS = 0, 1, 2


def _char_class(char: str) -> int:
    """The class of one character, as ``TOKEN`` reads it."""
    if _SPACE.match(char):
        return _SPACE_CLASS
    return _WORD_CLASS if _WORD.match(char) else _OTHER_CLASS


_ASCII_CLASS = np.array([_char_class(chr(code)) for code in range(128)], dtype=np.uint8)
_ASCII_UPPER = np.array([chr(code).isupper() for code in range(128)], dtype=bool)


def _classes(codes: NDArray[np.integer]) -> tuple[NDArray[np.uint8], NDArray[np.integer], NDArray[np.bool_]]:
    """Each character's class; the distinct non-ASCII code points and whether each is upper case."""
    if codes.dtype == np.uint8:  # an ASCII text (``char_codes``)
        return _ASCII_CLASS[codes], np.zeros(0, dtype=codes.dtype), np.zeros(0, dtype=bool)
    high = codes >= 128
    classes = _ASCII_CLASS[np.where(high, 0, codes)]
    if not high.any():
        return classes, np.zeros(0, dtype=codes.dtype), np.zeros(0, dtype=bool)
    distinct, inverse = np.unique(codes[high], return_inverse=True)
    characters = [chr(code) for code in distinct.tolist()]
    classes[high] = np.array([_char_class(char) for char in characters], dtype=np.uint8)[inverse]
    return classes, distinct, np.array([char.isupper() for char in characters], dtype=bool)


def token_spans(text: str) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.bool_]]:
    """(starts, ends, capitalised) of the tokens ``TOKEN.findall(text)`` finds, in order: each token is
    ``text[start:end]``; capitalised: its first character after the whitespace is upper case
    (``token.lstrip()[:1].isupper()``: ``str.lstrip`` strips what ``re``'s ``\\s`` matches)."""
    codes = char_codes(text)
    if not codes.size:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0, dtype=bool)
    classes, distinct, distinct_upper = _classes(codes)
    word = classes == _WORD_CLASS
    other = classes == _OTHER_CLASS
    # A token's word begins at an "other" character or where a run of word characters begins, and ends
    # after an "other" character or where that run ends; the whitespace before it belongs to it.
    padded = np.zeros(len(codes) + 2, dtype=bool)
    padded[1:-1] = word
    begins = other | (word & ~padded[:-2])
    finishes = other | (word & ~padded[2:])
    firsts = np.flatnonzero(begins)
    ends = (np.flatnonzero(finishes) + 1).astype(np.intp)
    starts = np.zeros_like(ends)  # a token begins where the one before it ended (the first at 0)
    starts[1:] = ends[:-1]
    first_codes = codes[firsts]
    if codes.dtype == np.uint8:
        capital = _ASCII_UPPER[first_codes]
    else:
        high = first_codes >= 128
        capital = _ASCII_UPPER[np.where(high, 0, first_codes)]
        if high.any():
            capital[high] = distinct_upper[np.searchsorted(distinct, first_codes[high])]
    return starts, ends, capital
