"""The secrets scanner's anchor search by numpy (``secrets._anchors``) finds exactly what ``_ANCHOR`` does."""

from __future__ import annotations

import random
import re

import numpy as np

from opsgate.guard import secrets
from opsgate.guard.secrets import _ANCHOR, _anchors, _windows


def _expected(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    return [match.span() for match in _ANCHOR.finditer(text, start, len(text) if end is None else end)]


def test_white_space_is_res() -> None:
    # Every code point: the table and the list of wide spaces are re's ``\s``.
    text = "".join(map(chr, range(0x110000)))
    found = {match.start() for match in re.finditer(r"\s", text)}
    codes = np.arange(0x110000, dtype=np.uint32)
    mask = secrets._ASCII_SPACE[np.minimum(codes, 127)]
    high = codes > 127
    mask[high] = np.isin(codes[high], secrets._WIDE_SPACES)
    assert set(np.flatnonzero(mask).tolist()) == found


def test_same_anchors_on_mixed_texts() -> None:
    rng = random.Random(7)
    pieces = [
        *("word", "a", "-----BEGIN", "-----BEGIN RSA PRIVATE KEY-----", "x" * 15, "y" * 16, "z" * 40),
        *("\u00e9t\u00e9", "\u4e2d\u6587" * 9, "\ud800", "1234567890abcdefgh", "-----BEGI", "ab-----BEGIN"),
        "-----BEGIN" * 3,
    ]
    spaces = [" ", "\n", "\t", "\u00a0", "\u2003", "\u3000", "\x1c", "", "", "\u0085"]
    for _ in range(300):
        text = "".join(rng.choice(pieces) + rng.choice(spaces) for _ in range(rng.randrange(200, 1500)))
        assert _anchors(text, 0, len(text)) == _expected(text)
        assert _windows(text) == _reference_windows(text)


def test_same_anchors_in_a_slice() -> None:
    text = ("token " + "k" * 20 + " -----BEGIN x\u2028") * 2000
    space = text.index(" ", 9000)
    assert _anchors(text, space, len(text)) == _expected(text, space)
    assert _anchors(text, 0, space) == _expected(text, 0, space)


def _reference_windows(text: str) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for anchor in _ANCHOR.finditer(text):
        low, high = max(0, anchor.start() - secrets._LOOK_BEHIND), anchor.end() + secrets._LOOK_AHEAD
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged
