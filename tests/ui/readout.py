"""Reading numbers back from what the dashboard displays, to compare with the admin API's JSON."""

from __future__ import annotations

import re

import pytest

_NUMBER = re.compile(r"-?[\d,]*\.?\d+(?:e-?\d+)?")


def number(text: str) -> float | None:
    """The first number in ``text`` ("1,234", "12.50%", "$0.00042", "1200 ms", "1.5 s"), in the API's unit
    (a fraction for %, milliseconds for s); None for the dash shown when there is no value."""
    text = text.strip()
    if text.startswith("—") or not text:
        return None
    match = _NUMBER.search(text)
    assert match, f"no number in {text!r}"
    value = float(match.group().replace(",", ""))
    tail = text[match.end() :].lstrip()
    if tail.startswith("%"):
        return value / 100
    if tail.startswith("s") and not tail.startswith("ms"):
        return value * 1000
    return value


def decimals(text: str) -> int:
    """How many digits the display shows after the point (its rounding)."""
    match = _NUMBER.search(text)
    assert match, text
    digits = match.group().partition(".")[2]
    return len(digits)


def shows(text: str, expected: float | None) -> bool:
    """Whether ``text`` displays ``expected`` to the precision it shows (a dash for None)."""
    value = number(text)
    if expected is None or value is None:
        return value is None and expected is None
    places = decimals(text) + (2 if text.strip().endswith("%") else 0)
    tail = re.sub(r"^[^a-z]*", "", text.strip())
    if tail.startswith("s"):  # seconds with one decimal: 100 ms steps
        return value == pytest.approx(expected, abs=50.0001)
    return value == pytest.approx(expected, abs=0.5 * 10**-places + 1e-12)
