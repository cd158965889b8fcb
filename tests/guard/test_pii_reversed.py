"""``correct_kind``'s cue tests by a reversed pattern matched once (``pii_names._at_end``) give what the searches
of the last characters they replace give, on generated endings of every cue (case, whitespace, punctuation,
final newlines, word characters glued before a cue)."""

from __future__ import annotations

import random
import re

import pytest

from opsgate.guard import pii_names
from opsgate.guard.pii_names import reverse_pattern

_CUES = [
    "dear", "Hi", "hello", "hey", "Mr", "mrs", "ms", "Miss", "dr", "prof", "sir", "madam", "patient", "customer",
    "client", "tenant", "applicant", "holder", "driver", "passenger", "employee", "colleague", "contact", "ask for",
    "name is", "name:", "I'm", "i am", "this is", "signed", "regards", "sincerely", "thanks", "cc", "cc:", "attn:",
    "lives in", "living in", "live in", "based in", "located in", "moved to", "moved from", "born in", "grew up in",
    "visit", "visiting", "visited", "travel to", "traveling to", "travelled to", "travelling to", "traveled to",
    "flew to", "flew from", "office in", "lab in", "branch in", "city of", "in", "IN", "from Rome to", "from x to",
    "works at", "work at", "working at", "works for", "working for", "employed by", "employer", "employer:",
    "order from", "customer of", "supplier", "company", "firm", "at", "AT", "from", "to", "Paris", "x",
]  # fmt: skip
_GLUE = ["", " ", "  ", "   ", "    ", "\n", " \n", "\u3000", "\u00a0", ".", ",", ".,", ",.", "a", "_", "-", "'", ":"]


def _endings(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = [rng.choice(_GLUE) + rng.choice(_CUES) + rng.choice(_GLUE) for _ in range(rng.randint(1, 6))]
        text = "".join(parts) + rng.choice(["", " ", "  ", "   ", "    ", " \n", "\n", ". ", "., ", ",  \n"])
        out.append(text[-rng.choice([40, 40, 24, 10, 3]) :])
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reversed_cues_answer_what_the_searches_of_the_last_characters_answer(seed: int) -> None:
    cues = [
        (pii_names._PERSON_CUE, pii_names._PERSON_CUE_END, True),
        (pii_names._PLACE_CUE, pii_names._PLACE_CUE_END, True),
        (pii_names._ORG_CUE, pii_names._ORG_CUE_END, True),
        (pii_names._FROM_TO_CUE, pii_names._FROM_TO_CUE_END, False),
    ]
    hits = 0
    for before in _endings(seed, 4000):
        for forward, backward, tail_only in cues:
            expected = forward.search(before, max(0, len(before) - 24) if tail_only else 0) is not None
            assert (backward.match(before[::-1]) is not None) == expected, (forward.pattern, before)
            hits += expected
    assert hits > 300  # the endings do reach the cues


def test_reverse_pattern() -> None:
    assert reverse_pattern(r"ab(?:cd|e[fg]?)\s{1,3}\b") == r"\b\s{1,3}(?:dc|[fg]?e)ba"
    for refused in (r"a.b", r"a+?", r"(a)", r"^a", r"a$"):
        with pytest.raises(ValueError):
            reverse_pattern(refused)
    rng = random.Random(9)
    pattern = re.compile(r"x(?:ab|c\sd)?e{1,2}[fg]\b")
    reverse = re.compile(reverse_pattern(pattern.pattern))
    for _ in range(2000):
        text = "".join(rng.choice(["x", "ab", "c d", "e", "f", "g", " ", "h"]) for _ in range(rng.randint(0, 8)))
        # A match of the reversed pattern at the reversed text's start is a match of the pattern ending the text.
        ending = any(pattern.fullmatch(text, at) for at in range(len(text) + 1))
        assert (reverse.match(text[::-1]) is not None) == ending, text
