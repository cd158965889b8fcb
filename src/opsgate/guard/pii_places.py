"""Where the identifier pattern can match in a long text, found by numpy passes over its character codes.

``start_places``: the places every match of ``pii._STARTS_NO_EMAIL`` starts at (and more); ``may_match``:
the windows that can hold a match at all. Both are exact shortcuts of the plain scans they replace
(``tests/guard/test_pii_shortcuts.py``, ``bench/pii_shortcuts.py``).
"""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import NDArray

from opsgate.guard.pii_base import digit_mask

# re's ``\w`` and what may separate two digits of one match (``[\s.-]``) for each ASCII code; above 127, ``\w`` is
# asked per distinct code point and any character may be a space.
_ASCII_WORD = np.array([re.match(r"\w", chr(code)) is not None for code in range(128)], dtype=bool)
_ASCII_SEPARATOR = np.array([re.match(r"[\s.-]", chr(code)) is not None for code in range(128)], dtype=bool)
_ASCII_LETTER = np.array([re.match(r"[A-Za-z]", chr(code)) is not None for code in range(128)], dtype=bool)
# Texts whose identifier windows hold fewer characters: ``pii._STARTS_NO_EMAIL`` in each window costs less (~85 ns a
# character) than ``start_places_in``'s passes over the windows (a fixed ~60 us, then ~10 ns a character).
PLACES_FROM = 1024


def start_places(text: str) -> NDArray[np.intp]:
    """Places of ``text`` that hold every match of ``pii._STARTS_NO_EMAIL`` (in any window), found by numpy passes
    over the character codes, and more: only word starts (a ``\\w`` after none, exactly as ``re`` reads it) and
    '(', '+', ':'. Its lookaheads are read loosely (two digits anywhere in the next eight characters, a ':' in the
    next four or five, any character above 127 as a space), and window ends are ignored.

    The same matches: a place where no alternative can match is tried for nothing; the places ``pii._matches``
    adds for emails in a run before an '@' are every word start there, so a word start added here was one
    already (and ``(+:`` never start an email, so they never mark a run's email as failed).
    """
    codes, digits = digit_mask(text)
    return np.flatnonzero(_starts(codes, digits))


def start_places_in(text: str, windows: list[tuple[int, int]]) -> list[list[int]]:
    """``start_places(text)`` inside each of ``windows`` (sorted, not overlapping), one list per window.

    Only the windows are read (each with the place before it and the 8 after it: all a place's test reads), so
    a text whose windows hold a few KB of its 32 costs a tenth of ``start_places``; and every window's places
    come from one set of numpy passes (a search per window cost more than the passes, ~3 us each).
    """
    codes, digits = digit_mask(text)
    size = len(codes)
    # Past the end: NUL, which is no word character, separator, digit, letter or ':' (what the test reads there).
    padded_codes = np.zeros(size + 8, dtype=codes.dtype)
    padded_codes[:size] = codes
    padded_digits = np.zeros(size + 8, dtype=bool)
    padded_digits[:size] = digits
    bounds = np.array(windows, dtype=np.intp).reshape(-1, 2)
    lows, highs = bounds[:, 0], bounds[:, 1]
    # Segments [low - 1, high + 8) cut out and laid end to end: a place's test reads no further than 8 on and
    # 1 back, so inside its own window every place reads what it reads in the whole text. A segment's first
    # place is the one before its window (never tested), or the text's first, which has nothing before it.
    firsts = np.maximum(lows - 1, 0)
    lengths = highs + 8 - firsts
    offsets = np.cumsum(lengths) - lengths  # where each segment starts, laid end to end
    where = np.arange(int(lengths.sum())) + np.repeat(firsts - offsets, lengths)  # each one's place in the text
    found = _starts(padded_codes[where], padded_digits[where])
    segment = np.repeat(np.arange(len(windows)), lengths)
    found &= (where >= lows[segment]) & (where < highs[segment])
    hits = np.flatnonzero(found)
    places = where[hits].tolist()
    cuts = np.searchsorted(segment[hits], np.arange(len(windows) + 1)).tolist()
    return [places[cuts[index] : cuts[index + 1]] for index in range(len(windows))]


def _starts(codes: NDArray[np.integer], digits: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``start_places``' test at every place of ``codes`` (``digits``: where ``re``'s ``\\d`` matches)."""
    size = len(codes)
    ascii_codes = np.minimum(codes, 127)
    high = codes > 127
    word = _ASCII_WORD[ascii_codes] & ~high
    separator = _ASCII_SEPARATOR[ascii_codes] | high
    if high.any():
        distinct, inverse = np.unique(codes[high], return_inverse=True)
        word[high] = np.array([re.match(r"\w", chr(code)) is not None for code in distinct.tolist()])[inverse]
    # Digits, and counts before each place of ':' and of digit pairs (a digit with a digit after it), padded past
    # the end: "a ':' in p + 1 .. p + k" is a difference of two counts.
    after = np.zeros(size + 8, dtype=bool)
    after[:size] = digits
    colons = np.zeros(size + 8, dtype=np.intp)
    colons[1 : size + 1] = np.cumsum(codes == 58)
    colons[size + 1 :] = colons[size]
    pairs = np.zeros(size + 8, dtype=np.intp)
    pairs[1 : size + 1] = np.cumsum(digits & after[1 : size + 1])
    pairs[size + 1 :] = pairs[size]
    colon_4 = colons[5 : size + 5] > colons[1 : size + 1]
    next_digit = after[1 : size + 1]
    digit_after_separator = _shifted(separator, 1) & after[2 : size + 2]
    # \d[\s.-]?\d, or hex digits then ':' (IPv6).
    digit_start = digits & (next_digit | digit_after_separator | colon_4)
    # [A-Za-z]{1,6}[ -]?\d\d (a digit pair starting in p + 1 .. p + 7), or hex letters then ':'.
    letter_start = _ASCII_LETTER[ascii_codes] & ~high & ((pairs[8 : size + 8] > pairs[1 : size + 1]) | colon_4)
    before_word = np.zeros(size, dtype=bool)
    before_word[1:] = word[:-1]
    starts: NDArray[np.bool_] = ~before_word & (digit_start | letter_start)
    starts |= (codes == 40) & next_digit  # '('
    starts |= (codes == 43) & (next_digit | digit_after_separator)  # '+'
    starts |= (codes == 58) & (colons[6 : size + 6] > colons[1 : size + 1])  # ':' then [0-9A-Fa-f]{0,4}:
    return starts


def _shifted(mask: NDArray[np.bool_], by: int) -> NDArray[np.bool_]:
    """``mask`` read ``by`` places on: ``out[p] = mask[p + by]``, False past the end."""
    out = np.zeros_like(mask)
    out[: len(mask) - by] = mask[by:]
    return out


def may_match(text: str, windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ``windows`` in which ``pii._PATTERN`` can match: those holding an '@', two ``\\d`` at most two places
    apart, or two ':' at most five apart.

    Every alternative's match holds one of these: an email its '@'; an IPv6 address ``[0-9A-Fa-f]{0,4}:`` twice;
    every other alternative two digits in a row or with one ``[\\s.-]`` between ("1.2" of an IPv4 address, "1 2"
    of a card). A window around a lone digit or a ':' after a word (docstrings: "Args:", "version 3") holds none,
    and was read by the start pattern and tried at its places for nothing (~100 of ~220 windows of 32 KB of
    stdlib docstrings). The kept windows are the same windows: only whole ones are dropped.
    """
    codes, digits = digit_mask(text)
    marks = np.zeros(len(codes), dtype=bool)
    marks[:-1] = digits[:-1] & digits[1:]
    marks[:-2] |= digits[:-2] & digits[2:]
    colons = codes == 58
    for apart in range(1, 6):
        marks[:-apart] |= colons[:-apart] & colons[apart:]
    marks |= codes == 64  # '@'
    at = np.flatnonzero(marks)
    bounds = np.array(windows, dtype=np.intp).reshape(-1, 2)
    keep = np.searchsorted(at, bounds[:, 0]) < np.searchsorted(at, bounds[:, 1])
    return [window for window, kept in zip(windows, keep.tolist(), strict=True) if kept]
