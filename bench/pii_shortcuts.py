"""The thirteenth session's PII shortcuts against the plain scans they replace, on generated texts.

    nice -n 10 .venv/bin/python bench/pii_shortcuts.py [--seed 1] [--scale 1.0]

Each check builds texts from pieces that reach the shortcut's edge cases (Unicode digits and spaces, a lone
surrogate, non-ASCII letters, emails after them, forms and cues at several densities) and asserts that the
shortcut gives what the plain form gives:

- ``pii_base.Literals.find``: every occurrence that a ``str.find`` loop per string finds;
- ``pii._identifier_windows``: no window it drops holds a match of ``_PATTERN`` (``finditer``);
- ``pii_places.start_places`` (and ``start_places_in``, each window's alone): ``_matches`` with them finds what it
  finds with ``_STARTS_NO_EMAIL``, in every window;
- ``pii_address``: ``_address_matches`` with the house numbers and the regions of ``Literals`` finds what
  ``_ADDRESS.finditer`` finds, in every window;
- ``pii_names._form_windows``: ``_ORG`` in them finds what ``_ORG.finditer`` finds in the whole text;
- ``pii_base.AnchorGroup``: each member's ``anchor_windows`` is its pattern's.

Prints one line per check (cases, matches compared); exits non-zero on the first difference. ``tests/`` is not
this tool's to change: it backs the commits' claims until tests of the same kind join the suite.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from opsgate.guard import pii, pii_address, pii_base, pii_names, pii_places  # noqa: E402


def _find_loop(text: str, strings: list[str]) -> list[tuple[int, str]]:
    out = []
    for string in dict.fromkeys(strings):
        at = text.find(string)
        while at >= 0:
            out.append((at, string))
            at = text.find(string, at + 1)
    return sorted(out)


def check_literals(rng: random.Random, count: int) -> str:
    sets = [
        [word for word, _ in pii_names._CUE_STARTS],
        [*pii_address._WORD_STARTS, *pii_address._SUFFIXES],
        list(pii_names._LEGAL_FORMS),
        ["a", "ab", "abc", "abcd", "é", "éé", "\u0100x", "x\u0100", "\ud800a"],
    ]
    for strings in sets:
        literals = pii_base.Literals(strings)
        alphabet = [*set("".join(strings)), " ", "\n", "\u0100", "\u00ff", "\ud800", "\x00", "\u0080", "\u2028"]
        for _ in range(count):
            parts = [
                rng.choice(strings) if rng.random() < 0.3 else rng.choice(alphabet) for _ in range(rng.randint(0, 80))
            ]
            text = "".join(parts)
            assert sorted(literals.find(text)) == _find_loop(text, strings), text
    return f"{count * len(sets)} texts"


_ID_PIECES = [
    "1", "42", "\u0661\u0662", "\u09e6", "\uff11", "\u00b2", ":", "a", "Bob", " ", "\n", "\u00e9", "-", ".", "\ud800",
    "@", "a@b.co", "x1.y@ex.org", "é1.a@b.co", "12:30", "::1", "fe80::1", "1.2.3.4", "+44 ", "+ 4", "(0", ")", "GB",
    "GB82 WEST 1234 5698 7654 32", "X", "ab:", "1 2", "3-4", "Version ", "x:y:z", "RSSMRA85T10A562S", "AB 12 34 56 C",
    "X1234567L", "_", "\u00a0", "\u2028", "ß", "word ", "the ",
]  # fmt: skip


def check_identifiers(rng: random.Random, count: int) -> str:
    windows = matches = dropped = 0
    for _ in range(count):
        pieces = [*rng.sample(_ID_PIECES, rng.randint(2, 12)), " ", "the "]
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(50, 2000)))
        places = pii_places.start_places(text)
        kept = set(pii._identifier_windows(text))
        every = pii._windows(text)
        # Each window's places alone (``start_places_in``): the whole text's that fall in it, for any windows.
        in_windows = dict(zip(every, pii_places.start_places_in(text, every), strict=True)) if every else {}
        in_windows[(0, len(text))] = pii_places.start_places_in(text, [(0, len(text))])[0]
        assert in_windows[(0, len(text))] == places.tolist(), text
        for window in [*every, (0, len(text))]:
            plain = [(m.span(), m.lastgroup) for m in pii._matches(text, *window)]
            assert [(m.span(), m.lastgroup) for m in pii._matches(text, *window, places=places)] == plain, text
            inside = [place for place in places.tolist() if window[0] <= place < window[1]]
            assert in_windows[window] == inside, text
            assert [(m.span(), m.lastgroup) for m in pii._matches(text, *window, starts=inside)] == plain, text
            if window not in kept and window != (0, len(text)):
                dropped += 1
                assert not list(pii._PATTERN.finditer(text, *window)), text[window[0] : window[1]]
            windows += 1
            matches += len(plain)
    return f"{count} texts, {windows} windows ({dropped} dropped), {matches} matches"


_ADDRESS_PIECES = [
    "12", "4068", "1234567", "3", " ", "  ", "\n", "\u00a0", "\u2028", ",", "-", "/", "(", ")", ".", "x", "Baker",
    "St.", "Street", "Jacob", "Stream", "rue", "bis", "ter", " de la ", "Paix", "Via", "Roma", "Kranzstr.",
    "Hauptstraße", "Apt", "Flat", "Unit", "P.O. Box", "Springfield", "IL", "62704", "é", "\u0661\u0662", "_", "a",
    "Calle", "Alcalá", "London", "NW1 6XE", "\ud800", "Via Roma 10", "Kranzstr. 60/95", "12 rue de la Paix",
    "Calle de Alcalá 5", "Hauptstraße 3", "P.O. Box 12", "4068 Jacob Stream", "Unit 4, 12 Baker St.",
]  # fmt: skip


def check_addresses(rng: random.Random, count: int) -> str:
    windows = matches = 0
    for _ in range(count):
        text = "".join(rng.choice(_ADDRESS_PIECES) for _ in range(rng.randint(500, 1200)))
        if len(text) < pii_base.SHORT:
            continue
        runs = pii_base.digit_runs(text)
        houses = pii_address._house_numbers(text, runs)
        regions = pii_address._literal_regions(text)
        for low, high in pii_address._digit_windows(text, 160, 300, runs):
            plain = [(m.span(), m.group()) for m in pii_address._ADDRESS.finditer(text, low, high)]
            found = pii_address._address_matches(text, low, high, runs, regions, houses)
            assert [(m.span(), m.group()) for m in found] == plain, text[low:high]
            windows += 1
            matches += len(plain)
    return f"{windows} windows, {matches} matches"


_ORG_PIECES = [
    "Acme", "Widgets", "Müller", "Émile", "van", "de", " ", " ", "\u00a0", "\n", ", ", " and ", " & ", "-", ".", "the",
    "works", "x", "Beck", "Sons", "Group", "A", "Ab", "\ud800", "_", "ß", "1", "(", "Co", "SA", "S",
]  # fmt: skip


def check_forms(rng: random.Random, count: int) -> str:
    matches = 0
    for index in range(count):
        density = (0.005, 0.02, 0.08)[index % 3]
        text = "".join(
            rng.choice(pii_names._LEGAL_FORMS) if rng.random() < density else rng.choice(_ORG_PIECES)
            for _ in range(rng.randint(3000, 6000))
        )
        plain = [(m.span(), m.group()) for m in pii_names._ORG.finditer(text)]
        found = pii_base.finditer_in(pii_names._ORG, text, pii_names._form_windows(text))
        assert [(m.span(), m.group()) for m in found] == plain, index
        matches += len(plain)
    return f"{count} texts, {matches} matches"


def check_anchor_group(rng: random.Random, count: int) -> str:
    from tests.guard.datasets import stdlib_paragraphs

    path = ROOT / "tests" / "data" / "guard" / "pii_faker_dev.jsonl"
    rows = [str(json.loads(line)["text"]) for line in path.read_text().splitlines() if line.strip()]
    pieces = [*rows, *stdlib_paragraphs()[:500], "\ud800", "Dear ", "GmbH", " at Foo, Bar and Baz", "\u00a0", "é"]
    members = (
        (pii_names._CUE_CHUNKS, pii_names._CUE_ANCHOR, 32, 448),
        (pii_names._FORM_CHUNKS, pii_names._FORM_ANCHOR, 288, 32),
        (pii_names._PARTNER_CHUNKS, pii_names._PARTNER_ANCHOR, 32, 224),
    )
    for _ in range(count):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 200)))
        for member, pattern, before, after in members:
            assert pii_base.anchor_windows(member, text, before, after) == pii_base.anchor_windows(
                pattern, text, before, after
            )
    return f"{count} texts"


def main() -> None:
    """Run every check and print what each compared."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every check's number of texts")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    checks = (
        (check_literals, 3000),
        (check_identifiers, 1500),
        (check_addresses, 300),
        (check_forms, 150),
        (check_anchor_group, 1000),
    )
    for check, count in checks:
        print(f"{check.__name__}: {check(rng, max(1, int(count * args.scale)))}", flush=True)


if __name__ == "__main__":
    main()
