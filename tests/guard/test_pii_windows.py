"""The PII patterns that run only in windows (around their anchors or digits) find what a whole-text scan finds."""

from __future__ import annotations

import random

import pytest

from opsgate.guard import pii_address, pii_names
from opsgate.guard.pii_address import find_marked_dates_and_ages
from opsgate.guard.pii_base import Finding
from opsgate.guard.pii_names import find_cued_names, find_organisations

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
