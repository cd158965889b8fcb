"""The PII scanner's numpy shortcuts give what the ``re`` scans they replace give, on generated texts with
Unicode digits (Arabic-Indic, Bengali, fullwidth), digit-like characters ``\\d`` does not match (superscripts,
fractions), non-ASCII letters and a lone surrogate."""

from __future__ import annotations

import random
import re

import pytest

from opsgate.guard import pii, pii_address, pii_base
from opsgate.guard.pii import _PATTERN, _matches, _windows
from opsgate.guard.pii_base import clusters, digit_runs

_PIECES = ["1", "42", "\u0661\u0662", "\u09e6", "\uff11", "\u00b2", "\u2155", ":", "a", "Bob", " ", "\n", "\u00e9",
           "-", ".", "\ud800", "x" * 7, "y" * 16, "z" * 17, "w" * 61]  # fmt: skip


def _texts(seed: int, count: int = 400) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 60))) for _ in range(count)]


@pytest.mark.parametrize("short", [0, pii_base.SHORT])  # 0: numpy for every text
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_digit_runs_and_clusters_are_what_re_finds(seed: int, short: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pii_base, "SHORT", short)
    for text in [*_texts(seed), *_long_texts(seed)]:
        for also, runs, gap_class in (("", r"\d+", r"\D"), (":", r"[\d:]+", r"[^\d:]")):
            starts, ends = digit_runs(text, also)
            assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == [
                m.span() for m in re.finditer(runs, text)
            ], text
            for gap in (0, 1, 16, 64, 460):
                pattern = rf"{runs}(?:{gap_class}{{0,{gap}}}{runs})*"
                assert clusters(starts, ends, gap) == [m.span() for m in re.finditer(pattern, text)], (text, gap)


def _long_texts(seed: int, count: int = 6) -> list[str]:
    """Texts longer than ``pii_base.SHORT`` (numpy's path), with many runs (``clusters``' numpy path)."""
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randint(700, 1400))) for _ in range(count)]


def _digit_windows_plain(text: str, before: int, after: int) -> list[tuple[int, int]]:
    """The address windows as ``re`` found their clusters (the tree before ``digit_runs``)."""
    spans: list[tuple[int, int]] = []
    for run in re.finditer(rf"\d+(?:\D{{0,{before + after}}}\d+)*", text):
        low, high = max(0, run.start() - before), min(len(text), run.end() + after)
        if spans and low <= spans[-1][1]:
            spans[-1] = (spans[-1][0], high)
        else:
            spans.append((low, high))
    return spans


@pytest.mark.parametrize("short", [0, pii_base.SHORT])
@pytest.mark.parametrize("seed", [4, 5])
def test_digit_windows_and_address_starts_are_what_re_finds(
    seed: int, short: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pii_base, "SHORT", short)
    for text in [*_texts(seed), *_long_texts(seed, 3)]:
        for before, after in ((160, 300), (64, 64), (3, 2)):
            assert pii_address._digit_windows(text, before, after) == _digit_windows_plain(text, before, after)
        runs = digit_runs(text)
        for low, high in [(0, len(text)), (3, 17), (5, 6), (len(text) // 2, len(text))]:
            got = list(pii_address._address_matches(text, low, high, runs))
            want = list(pii_address._address_matches(text, low, high, None))
            assert [m.span() for m in got] == [m.span() for m in want]


_EMAIL_PIECES = [
    "a@b.co", "bob.smith+tag@mail.example.org", "x%y@z.io", ".lead@x.de", "-dash@y.fr", "9to5@jobs.com", "@", "@@",
    "a@", "@b.com", "user@host", "a.b.c@d.e.f.gh", "Ünï@x.de", "名@x.jp", "bob88@x.org", "+1 415 555 2671", "12",
    "DE89 3704 0044 0532 0130 00", "fe80::1", "192.168.0.1", "x" * 70, "mail", ":", "(", "+",
]  # fmt: skip


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_identifier_starts_find_what_finditer_finds_around_emails(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(400):
        glue = [" ", "", ",", ".", "\n", "-", "_", "a", "%"]
        text = "".join(rng.choice(_EMAIL_PIECES) + rng.choice(glue) for _ in range(rng.randint(1, 30)))
        for low, high in [(0, len(text)), *_windows(text), (len(text) // 3, len(text))]:
            expected = [(m.span(), m.lastgroup) for m in _PATTERN.finditer(text, low, high)]
            assert [(m.span(), m.lastgroup) for m in _matches(text, low, high)] == expected, (text, low, high)


@pytest.mark.parametrize("seed", [9, 10])
def test_alternatives_by_first_character_match_what_the_whole_pattern_matches(seed: int) -> None:
    """At every place of identifier soup, the alternatives ``_FIRST`` picks by its character match as
    ``_PATTERN`` does (span and kind)."""
    rng = random.Random(seed)
    pieces = [*_EMAIL_PIECES, "X-1234567-L", "12345678Z", "AB 12 34 56 C", "RSSMRA85T10A562S", "2234-5678-9012",
              "4111 1111 1111 1111", "123-45-6789", "123456789", "(415) 555-2671", "ext. 12", "x12",
              "\u0661\u0662\u0663", "_a1", "abc:def::1", "v1.2.3.4"]  # fmt: skip
    for _ in range(300):
        text = "".join(rng.choice(pieces) + rng.choice([" ", "", ",", "-", "."]) for _ in range(rng.randint(1, 12)))
        for at in range(len(text)):
            whole = _PATTERN.match(text, at)
            picked = pii._FIRST.get(text[at], _PATTERN).match(text, at)
            assert (whole and (whole.span(), whole.lastgroup)) == (picked and (picked.span(), picked.lastgroup)), (
                text,
                at,
            )


@pytest.mark.parametrize("seed", [13, 14])
def test_identifier_windows_by_numpy_are_the_anchor_windows(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pii._windows`` past ``SHORT`` characters (numpy) and below it (``re``) give the windows of one step
    per anchor; short texts are also run through the numpy path (``SHORT`` = 0)."""
    from tests.guard.test_pii_speedups import _windows_plain

    rng = random.Random(seed)
    pieces = [*_PIECES, "@", "a@b.co", "12:30", "::1"]
    texts = [
        *_long_texts(seed, 4),
        *("".join(rng.choice(pieces) for _ in range(rng.randint(0, 60))) for _ in range(300)),
    ]
    for short in (pii_base.SHORT, 0):
        monkeypatch.setattr(pii, "SHORT", short)
        for text in texts:
            assert _windows(text) == _windows_plain(text), text
