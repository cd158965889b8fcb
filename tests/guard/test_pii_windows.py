"""The PII patterns that run only in windows (around their anchors or digits), or only where a match can
start, find what a whole-text scan finds."""

from __future__ import annotations

import random
import re

import pytest

from opsgate.guard import pii_address, pii_names
from opsgate.guard.pii import _PATTERN, _matches, _windows
from opsgate.guard.pii_address import find_marked_dates_and_ages
from opsgate.guard.pii_base import _SENTENCE_DOT, Finding, trim
from opsgate.guard.pii_names import _FROM_TO_CUE, _PLACE_CUE, find_cued_names, find_organisations

_PIECES = [
    "Dear", "Mr.", "Mrs", "Dr", "patient", "Customer", "I am", "I'm", "name is", "Regards,", "lives in", "born in",
    "moved from", "to", "flew", "drove", "works at", "employed by", "Employer:", "on behalf of", "customer of",
    "Acme", "Anna", "Kowalski", "Müller", "Élodie", "van", "de", "GmbH", "S.A.", "& Co. KG", "GmbH & Co. KGaA", "Ltd",
    "Inc.", "AG", "SA", "and", "&", "for", "at", "from", "with", "by", "born on", "DOB:", "date of birth",
    "12.03.1985", "1985-03-12", "March 3, 1990", "3rd of May, 1977", "aged", "34", "7", "years old", "years ago",
    "age", "ages", "was", "kg", "%", "١٢", "Ünïcödé", "x" * 40, "Strasse", "the", "a", "of", "in",
]  # fmt: skip
_GLUE = [" ", " ", " ", ", ", "\n", "\u3000", "\xa0", "", "  ", ". ", "-"]


def _texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts: list[str] = []
        while sum(map(len, parts)) < rng.choice((300, 1500, 4000)):
            parts += [rng.choice(_PIECES), rng.choice(_GLUE)]
        out.append("".join(parts))
    return out


def _scan(texts: list[str]) -> list[tuple[list[Finding], list[Finding], list[Finding]]]:
    return [(find_cued_names(t), find_organisations(t), find_marked_dates_and_ages(t)) for t in texts]


@pytest.mark.parametrize("seed", [1, 2])
def test_windows_find_what_the_whole_text_finds(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [*_texts(150, seed), "Dear \ud800 Anna Smith, born on 12.03.1985", "Acme Widgets\u3000GmbH"]
    windowed = _scan(texts)
    monkeypatch.setattr(pii_names, "anchor_windows", lambda anchor, text, *args, **kwargs: [(0, len(text))])
    monkeypatch.setattr(pii_address, "_digit_windows", lambda text, *args: [(0, len(text))])
    assert windowed == _scan(texts)
    assert any(any(found) for found in windowed)  # the texts do hold names, firms and dates


_IDS = [
    "+44 20 7946 0958", "(415) 555-2671", "415.555.2671", "DE89 3704 0044 0532 0130 00", "RSSMRA85T10A562S",
    "AB 12 34 56 C", "X-1234567-L", "12345678Z", "2234-5678-9012", "4111 1111 1111 1111", "123-45-6789",
    "123456789", "192.168.0.1", "fe80::1", "::", "a@b.co", "bob88@x.org", "Tel", "call", "ext. 12", "x12", "١٢٣",
    ":", "-", "+", "(", ")", "AB", "Smith", "v1.2.3.4", "0361717565", "2024-03-15", "_", "é",
]  # fmt: skip


@pytest.mark.parametrize("seed", [3, 4])
def test_pattern_tried_at_its_starts_finds_what_finditer_finds(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        text = "".join(rng.choice(_IDS) + rng.choice(_GLUE) for _ in range(rng.randint(1, 40)))
        for low, high in [(0, len(text)), *_windows(text)]:
            expected = [(m.span(), m.lastgroup) for m in _PATTERN.finditer(text, low, high)]
            assert [(m.span(), m.lastgroup) for m in _matches(text, low, high)] == expected, text


_PLACE_CUE_WHOLE = re.compile(
    r"(?:\b(?:lives?\sin|living\sin|live\sin|based\sin|located\sin|moved\sto|moved\sfrom|born\sin|"
    r"grew\sup\sin|visit(?:ing|ed)?|travel(?:l?ing|l?ed)?\sto|flew\sto|flew\sfrom|office\sin|lab\sin|"
    r"branch\sin|city\sof|from\s\S+\sto|in)\s{1,3})$",
    re.I,
)
_TAILS = [
    "lives in", "from Rome to", "from x to", "travelling to", "grew up in", "visited", "city of", "in", "IN", "Paris.",
    "Str.", "Abcde.", "Abcd.", "Xyzzy.\n", "a, ;", "to", "from", "\n", " ", "  ", "\u3000", ",", ".",
]  # fmt: skip


def test_shortcuts_agree_with_the_plain_patterns() -> None:
    """``trim`` searches only the last characters, place cues the last 24: as the whole-string forms."""
    rng = random.Random(5)
    for _ in range(3000):
        text = "".join(rng.choice(_TAILS) + rng.choice(["", " ", "  ", "\n"]) for _ in range(rng.randint(1, 8)))[-40:]
        assert trim(text) == _SENTENCE_DOT.sub("", text.rstrip(" ,;:")), text
        whole = _PLACE_CUE_WHOLE.search(text) is not None
        tail = max(0, len(text) - 24)
        assert whole == bool(_PLACE_CUE.search(text, tail) or _FROM_TO_CUE.search(text)), text
