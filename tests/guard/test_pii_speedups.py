"""The PII scanner's shortcuts give what the plain forms they replace give, on generated texts.

Each plain form is kept here as the reference: the shortcut must agree with it exactly (same spans,
same answers), including on the odd inputs (Unicode digits and whitespace, '@' next to digits).
"""

from __future__ import annotations

import random
import re

import pytest

from opsgate.guard.pii import _MERGE_GAP, _windows

_ANCHOR = re.compile(r"[\d:]+|@")


def _windows_plain(text: str) -> list[tuple[int, int]]:
    """The windows as one step per anchor computed them (the tree before the cluster pattern)."""
    spans: list[tuple[int, int]] = []
    for anchor in _ANCHOR.finditer(text):
        if anchor.group() == "@":
            low, high = anchor.start() - 64, anchor.end() + 128
        else:
            low, high = anchor.start() - _MERGE_GAP, anchor.end() + _MERGE_GAP
        low = max(0, low)
        while spans and low <= spans[-1][1]:
            previous_low, previous_high = spans.pop()
            low, high = min(low, previous_low), max(high, previous_high)
        spans.append((low, high))
    return [(low, min(high, len(text))) for low, high in spans]


_WINDOW_PIECES = ["1", "12", "٣", ":", "::", "@", "a", "bob", " ", "\n", "-", "x" * 7, "y" * 15, "z" * 16, "w" * 17]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_windows_are_the_union_of_the_anchor_windows(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        text = "".join(rng.choice(_WINDOW_PIECES) for _ in range(rng.randint(0, 60)))
        assert _windows(text) == _windows_plain(text), text
