"""The PII scanner's shortcuts give what the plain forms they replace give, on generated texts.

Each plain form is kept here as the reference: the shortcut must agree with it exactly (same spans,
same answers), including on the odd inputs (Unicode digits and whitespace, '@' next to digits).
"""

from __future__ import annotations

import random
import re
from importlib import resources

import pytest

from opsgate.domain.guard_config import PiiEntity
from opsgate.guard import pii_address, pii_names
from opsgate.guard.pii import _MERGE_GAP, _windows
from opsgate.guard.pii_address import find_marked_dates_and_ages
from opsgate.guard.pii_base import Finding, anchor_windows, by_first_character, finditer_in, looks_like_code, trim
from opsgate.guard.pii_names import find_cued_names
from opsgate.guard.pii_phone import PhoneRules

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


_ORG_PLAIN = re.compile(
    "(?<![\\w-])" + pii_names._WORD + pii_names._ORG.pattern.split(pii_names._WORD[len(pii_names._CAPITAL) :], 1)[1]
)


def _cued_plain(text: str) -> list[Finding]:
    """``find_cued_names`` as ``finditer`` in each window (the tree before the cue starts)."""
    found: list[Finding] = []
    windows = anchor_windows(pii_names._CUE_ANCHOR, text, 32, 448)
    for match in finditer_in(pii_names._CUED, text, windows):
        group = match.lastgroup
        assert group is not None
        kind: PiiEntity = "person" if group == "person" else "location" if group == "place" else "organization"
        value = trim(match.group(group))
        if not looks_like_code(value):
            found.append(Finding(kind, match.start(group), match.start(group) + len(value), value))
    for match in finditer_in(pii_names._TO_PLACE, text, windows):
        value = trim(match.group("place"))
        if not looks_like_code(value):
            found.append(Finding("location", match.start("place"), match.start("place") + len(value), value))
    return found


_CUE_PIECES = [
    "Dear", "Mr.", "Mrs", "Ms.", "Miss", "Dr", "Prof.", "patient", "Patient", "customer", "Client", "tenant",
    "Applicant", "contact", "Ask for", "ask\tfor", "name is", "Name:", "I'm", "I am", "I\u3000am", "Signed",
    "regards,", "Sincerely,", "lives in", "live in", "living in", "based in", "located in", "born in", "grew up in",
    "moved from", "moved to", "flew to", "travelled from", "traveled to", "relocated to", "drove from", "to",
    "office in", "lab in", "branch in", "works at", "work for", "working at", "employed by", "Employer:",
    "order from", "customer of", "on behalf of", "on\xa0behalf\xa0of", "Anna", "Kowalski", "Müller", "Élodie",
    "van", "de", "la", "d'", "Rio", "Acme", "GmbH", "Ltd", "Inc.", "& Co. KG", "S.A.", "and", "&", "at", "for",
    "with", "by", "Nord-Süd", "x" * 35, "Ünïcödé", "sys.path", "KeyError", "USA", "am", "behalf", "liv", "lab",
]  # fmt: skip
_CUE_GLUE = [" ", " ", " ", "  ", ", ", ",", "\n", "\u3000", "\xa0", "", ". ", "-", "'s "]


def _cue_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        size = rng.choice((200, 1200, 5000))
        parts: list[str] = []
        while sum(map(len, parts)) < size:
            parts += [rng.choice(_CUE_PIECES), rng.choice(_CUE_GLUE)]
        out.append("".join(parts))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_cues_tried_at_their_starts_find_what_finditer_finds(seed: int) -> None:
    texts = [*_cue_texts(300, seed), "Dear \ud800 Anna Smith lives in Rio", "I am", "on behalf of Acme Ltd"]
    found = 0
    for text in texts:
        expected = _cued_plain(text)
        assert find_cued_names(text) == expected, text
        found += len(expected)
    assert found > 1000  # the texts do hold cued names


@pytest.mark.parametrize("seed", [3, 4])
def test_organisation_pattern_reading_the_capital_first_matches_the_plain_form(seed: int) -> None:
    rng = random.Random(seed)
    pieces = [*_CUE_PIECES, "\u00d7", "\u00c0", "-Acme", "_Acme", "1Acme"]
    found = 0
    for text in [*_cue_texts(150, seed), *("".join(rng.choice(pieces) for _ in range(40)) for _ in range(300))]:
        expected = [m.span() for m in _ORG_PLAIN.finditer(text)]
        assert [m.span() for m in pii_names._ORG.finditer(text)] == expected, text
        found += len(expected)
    assert found > 100


def _flat_street_types() -> str:
    text = resources.files("opsgate.guard").joinpath("data/street_types.txt").read_text(encoding="utf-8")
    words = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return "|".join(
        f"[{w[0].upper()}{w[0].lower()}]{re.escape(w[1:])}" for w in sorted(set(words), key=len, reverse=True)
    )


_FLAT_FORMS = "|".join(re.escape(form) for form in sorted(pii_names._LEGAL_FORMS, key=len, reverse=True))
_ADDRESS_FLAT = re.compile(pii_address._ADDRESS.pattern.replace(pii_address._street_types(), _flat_street_types()))
_ORG_FLAT_FORMS = re.compile(
    pii_names._ORG.pattern.replace(
        by_first_character([(re.escape(f[0]), re.escape(f[1:])) for f in pii_names._FORMS]), _FLAT_FORMS
    )
)
_ADDRESS_PIECES = [
    "12", "4068", "7b", "12-14", "Flat 3", "Apt. 4", "Suite 100", "P.O. Box 12", "PO Box 7", "USS Nimitz", "FPO AE 09",
    "Jacob", "Baker", "Main", "North", "Élysée", "Street", "street", "St.", "Rd", "road", "Stream", "Streets",
    "State Highway", "Right Of Way", "Cul-de-sac", "Way", "way", "Park", "Parkway", "Springfield", "IL", "62704",
    "London", "NW1 6XE", "Kranzstr.", "Hauptstraße", "60/95", "Via Roma", "Calle de Alcalá", "rue de la Paix",
    "avenue", "09895", "Iserlohn", "Acme", "Widgets", "Ltd", "GmbH & Co. KG", "GmbH", "S.A.", "SA", "Sp. z o.o.",
    "AG", "and Sons", "& Partners", "- ME", "Group", "plc", "PLC", "Co.", "Company", "Inc", "Inc.", "Oy", "e figli",
]  # fmt: skip


@pytest.mark.parametrize("seed", [5, 6])
def test_alternations_grouped_by_first_character_match_the_flat_ones(seed: int) -> None:
    """The street types and legal forms, grouped by first letter, match what the flat lists match."""
    rng = random.Random(seed)
    glue = [" ", " ", ", ", "  ", "\n", "", "-", ". "]
    found = [0, 0]
    for _ in range(600):
        text = "".join(rng.choice(_ADDRESS_PIECES) + rng.choice(glue) for _ in range(rng.randint(2, 30)))
        expected = [(m.span(), m.groups()) for m in _ADDRESS_FLAT.finditer(text)]
        assert [(m.span(), m.groups()) for m in pii_address._ADDRESS.finditer(text)] == expected, text
        expected_orgs = [m.span() for m in _ORG_FLAT_FORMS.finditer(text)]
        assert [m.span() for m in pii_names._ORG.finditer(text)] == expected_orgs, text
        found[0] += len(expected)
        found[1] += len(expected_orgs)
    assert min(found) > 200


def _dates_plain(text: str) -> list[Finding]:
    """``find_marked_dates_and_ages`` with ``finditer`` in each window (the tree before the marker starts)."""
    lowered = text.lower()
    found: list[Finding] = []
    dob = any(word in lowered for word in ("birth", "born", "dob", "d.o.b"))
    age = any(word in lowered for word in ("age", "year", "yr"))
    if not (dob or age):
        return found
    windows = pii_address._digit_windows(text, 64, 64)
    if dob:
        dates = finditer_in(pii_address._DOB, text, windows)
        found += [Finding("date_of_birth", m.start("date"), m.end("date"), m.group("date")) for m in dates]
    if not age:
        return found
    for match in finditer_in(pii_address._AGE, text, windows):
        group = "a" if match.group("a") is not None else "b"
        if int(match.group(group)) <= 120:
            found.append(Finding("age", match.start(group), match.end(group), match.group(group)))
    return found


_DATE_PIECES = [
    "born on", "Born in", "BORN", "date of birth", "Date\tof birth", "birth date", "birthdate", "Birthday", "DOB:",
    "d.o.b.", "D.O.B", "do.b", "d.ob", "dob", "12.03.1985", "1985-03-12", "March 3, 1990", "3rd of May, 1977",
    "in 1990", "aged", "Age:", "AGE", "ages", "age of", "is", "was", "34", "7", "120", "121", "1000", "years old",
    "yrs old", "Yrs-old", "year-old", "years ago", "kg", "%", "\u0131", "\u017f", "\u0130", "\u212a", "message",
    "page", "usage", "١٢", "Ünïcödé", "x" * 30, "the", "of", "b\u0131rth date", "B\u0130RTHDAY", "age\u017f",
]  # fmt: skip


@pytest.mark.parametrize("seed", [7, 8])
def test_dates_and_ages_tried_at_their_markers_find_what_finditer_finds(seed: int) -> None:
    rng = random.Random(seed)
    glue = [" ", " ", "-", "", ": ", "\n", "\u3000", ", "]
    found = 0
    for _ in range(1500):
        text = "".join(rng.choice(_DATE_PIECES) + rng.choice(glue) for _ in range(rng.randint(1, 40)))
        expected = _dates_plain(text)
        assert find_marked_dates_and_ages(text) == expected, text
        found += len(expected)
    assert found > 500


# The continental street words of _ADDRESS ("Calle", "Avda.", "ul.", …), as the pattern spells them.
_CONTINENTAL_WORDS = [*pii_address._CONTINENTAL.split("|(?:Calle|", 1)[1].split(")", 1)[0].split("|"), "Calle"]


def _expand(piece: str) -> list[str]:
    """The spellings of one suffix of the pattern: ``[Ss]tra(?:ß|ss)e`` is four, ``[Ss]tr\\.`` two."""
    firsts = [piece[1], piece[2]] if piece.startswith("[") else [piece[0]]
    rest = piece[4:] if piece.startswith("[") else piece[1:]
    rests = [rest.replace("(?:ß|ss)", middle) for middle in ("ß", "ss")] if "(?:" in rest else [rest]
    return [first + tail.replace("\\", "") for first in firsts for tail in rests]


# The continental street suffixes of _ADDRESS ("[Ss]tra(?:ß|ss)e", "weg", …), every spelling.
_SUFFIX_GROUP = pii_address._CONTINENTAL.split("{1,30}(?:", 1)[1].split(")|(?:Calle", 1)[0]
_CONTINENTAL_SUFFIXES = [
    spelling
    for piece in _SUFFIX_GROUP.replace("(?:ß|ss)", "@").split("|")
    for spelling in _expand(piece.replace("@", "(?:ß|ss)"))
]
_ADDRESS_ODD = [
    "ul. Długa 5", "al. Jana 3", "ulica Polna 12", "osiedle Nowe 4", "place Vendôme 2", "12 bis rue", "١٢",
    "Ährenstraße 12", "Öster", "Kranzstr., n.º 4", "P O Box 9", "P.O.Box 12", "Post Office Box 3", "PSC 1234, Box 5678",
    "USNS Comfort", "USCGC Eagle", "APO AP 96543", "Studio 4", "Apartment 2", "Haupt-Weg 3",
    "X" * 31 + "ring 4", "Y" * 32 + "weg 5", "XCallee 5", "ÄViallee 7",
    *(word.replace("\\", "").replace("?", "") + " Mayor 5" for word in _CONTINENTAL_WORDS),
    *(f"Haupt{suffix} 12" for suffix in _CONTINENTAL_SUFFIXES),
]  # fmt: skip


@pytest.mark.parametrize("seed", [9, 10])
def test_addresses_tried_at_their_starts_find_what_finditer_finds(seed: int) -> None:
    rng = random.Random(seed)
    glue = [" ", " ", ", ", "  ", "\n", "", "-", ". ", "_", "x"]
    pieces = [*_ADDRESS_PIECES, *_ADDRESS_ODD, *_FRENCH_PIECES]
    found = 0
    for _ in range(800):
        text = "".join(rng.choice(pieces) + rng.choice(glue) for _ in range(rng.randint(2, 40)))
        for low, high in [(0, len(text)), *pii_address._digit_windows(text)]:
            expected = [(m.span(), m.groups()) for m in pii_address._ADDRESS.finditer(text, low, high)]
            assert [(m.span(), m.groups()) for m in pii_address._address_matches(text, low, high)] == expected, text
            found += len(expected)
    assert found > 500


_FRENCH_PIECES = ["rue", "avenue", "boulevard", "bd", "chemin", "allée", "impasse", "quai", "route", "cours", "voie"]


def test_country_names_grouped_by_first_character_match_as_the_flat_list() -> None:
    """``PhoneRules``' country pattern, grouped by first character, finds what the flat alternation of the 259
    names (longest first) finds: the same spans, so the same regions, on texts of names glued and cut."""
    rules = PhoneRules(["US"])
    names = sorted(rules._names, key=len, reverse=True)
    flat = re.compile(r"\b(" + "|".join(re.escape(name) for name in names) + r")\b")
    rng = random.Random(7)
    pieces = [*names, "the ", " ", "x", "-", "\u00e9", "ian", "s", "\n", "1", "_", "\u0130"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) + rng.choice(["", " ", ",", "s"]) for _ in range(rng.randint(0, 12)))
        found = [(m.span(), m.group(1)) for m in rules._country.finditer(text)]
        assert found == [(m.span(), m.group(1)) for m in flat.finditer(text)], text
        assert rules.regions_near(text) == [rules._names[m.group(1)] for m in flat.finditer(text.lower())]


@pytest.mark.parametrize("seed", [1, 2])
def test_address_literals_found_in_regions_are_what_the_window_scan_finds(seed: int) -> None:
    """``_literal_hits`` scans only RE2's regions of an ASCII text: the same hits as ``_LITERALS.finditer`` of
    the window, where strings overlap ("Calleee", "Strasse"), windows cut them, and (non-ASCII, a lone
    surrogate) where it scans whole windows."""
    words = [*pii_address._WORD_STARTS, *pii_address._SUFFIXES]
    pieces = [*words, *(w[:-1] for w in words), *(w[1:] for w in words), "Calleee", "Pl", " ", "1", "x", "\n", "s"]
    rng = random.Random(seed)
    for _ in range(1500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        for variant in (text.encode("ascii", "ignore").decode(), text + "\ud800"):
            regions = pii_address._literal_regions(variant)
            assert (regions is None) == (not variant.isascii())
            for _ in range(4):
                low = rng.randint(0, len(variant))
                high = rng.randint(low, len(variant))
                expected = [m.span() for m in pii_address._LITERALS.finditer(variant, low, high)]
                assert [m.span() for m in pii_address._literal_hits(variant, low, high, regions)] == expected


def test_marker_words_found_in_one_pass_as_in_finds_them() -> None:
    """``pii_address._markers`` (one RE2 set pass) says what ``word in lowered`` for each word says."""
    rng = random.Random(11)
    pieces = [*pii_address._DOB_WORDS, *pii_address._AGE_WORDS, "d.o", "ne\u0301", "n", "\u00e9", "ag", "ye", "a", " ",
              "\u4e2d", "x" * 20, "geboort", "\ud800", "birt", "bo", "rn"]  # fmt: skip
    seen = set()
    for _ in range(2000):
        lowered = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        expected = (
            any(word in lowered for word in pii_address._DOB_WORDS),
            any(word in lowered for word in pii_address._AGE_WORDS),
        )
        assert pii_address._markers(lowered) == expected, lowered
        seen.add(expected)
    assert len(seen) == 4


def test_literals_are_found_in_the_order_of_a_search_by_prefix() -> None:
    """``Literals.find`` lists what a plain search finds, in its order: by place, then by prefix length (1, 2, 3
    characters), then as the strings were given (the strings that may start at a place are kept by its codes)."""
    from opsgate.guard.pii_base import Literals

    strings = ["P", "Post", "Pl", "Platz", "US", "Unit", "straße", "str.", "Str.", "strada", "Straße", "ß", "ü"]
    literals = Literals(strings)
    rng = random.Random(5)
    pieces = [*strings, "\u00e9", " ", "\n", "Pü", "a", "\ud800", "\u4e2d", "S", "st", "P" * 3]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        expected = [
            (at, string)
            for at in range(len(text))
            for length in (1, 2, 3)
            for string in strings
            if min(len(string), 3) == length and text.startswith(string, at)
        ]
        assert literals.find(text) == expected, text
