"""``storable_json_text`` (store/encoding.py) against the lookbehind regex it replaced, kept here as the
reference: the same output on random escape soups and records, including megabyte backslash runs."""

from __future__ import annotations

import random
import re

from opsgate.store.encoding import record_json, storable_json_text

_REFERENCE = re.compile(
    r"(?<!\\)((?:\\\\)*)\\u(0000|[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def _reference(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        return match.group(0) if len(match.group(2)) > 4 else match.group(1) + "\\ufffd"

    return _REFERENCE.sub(replace, text)


ATOMS = ["\\", "\\\\", "\\u0000", "\\ud800", "\\udc00", "\\uD83D\\uDE00", "\\ud83d\\ude00", "u0000", "a", '"']
ATOMS += ["\\u0001", "\\uDBFF", "\\ud800\\ud800", "\\uDfff", "\\u", "ud83d", "\\\\\\", "é"]


def test_random_escape_soups_match_the_reference() -> None:
    rnd = random.Random(11)
    for _ in range(50_000):
        text = "".join(rnd.choice(ATOMS) for _ in range(rnd.randrange(1, 12)))
        assert storable_json_text(text) == _reference(text), repr(text)


def test_records_with_nul_and_surrogates_match_the_reference() -> None:
    rnd = random.Random(5)
    for _ in range(1_000):
        value = "".join(chr(rnd.choice([0, 1, 0xD800, 0xDC00, 0x41, 0x5C, 0x22, 0x1F600])) for _ in range(20))
        line = record_json({"input_text": value, "request": record_json({"c": value}).decode(), "m": {value: value}})
        text = line.decode()
        assert storable_json_text(text) == _reference(text)
        assert "\\u0000" not in storable_json_text(text).replace("\\\\u0000", "")


def test_long_backslash_runs_decide_escapes_by_their_parity() -> None:
    for run in (0, 1, 2, 63, 64, 65, 1_000, 100_001, 400_000):
        text = '"' + "\\" * run + "\\u0000" + '"'
        assert storable_json_text(text) == _reference(text), run
        assert storable_json_text(text).endswith("\\ufffd" + '"') == (run % 2 == 0)


def test_text_without_a_refused_escape_is_returned_as_is() -> None:
    text = '{"a": "\\u0001\\u0041\\\\u0000x"}'
    assert storable_json_text(text) is text or storable_json_text(text) == text
    assert storable_json_text(text) == _reference(text)
