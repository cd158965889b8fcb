"""Street addresses, dates of birth and ages, by pattern.

Addresses: a house number, one to four capitalised words and a street type ("4068 Jacob Stream",
"12 Baker St., Apt. 4"), or the continental order ("Kranzstr. 60/95", "Via Roma 10", "12 rue de
la Paix", "Calle de Alcalá 5"), each optionally followed by a postcode and town ("Springfield, IL
62704", "09895 Iserlohn", "London NW1 6XE"). The English street types are the USPS and AS 4590
lists in ``data/street_types.txt``. A date of birth or an age counts only where the text marks it
as one ("DOB: …", "born on …", "aged 34", "34 years old"): a bare date or number is not personal.

Every pattern has bounded repetition only, so a scan is linear in the input's length.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from importlib import resources

import numpy as np
from numpy.typing import NDArray

from opsgate.guard.linear_re import LinearSet, compile_linear
from opsgate.guard.pii_base import (
    SHORT,
    Finding,
    Literals,
    by_first_character,
    char_codes,
    clusters,
    digit_runs,
    finditer_in,
    matches_at,
    trim,
)


def _street_types() -> str:
    """The street types as one alternation: longest first, so "Streets" is tried before "Street"; the first
    letter may be either case. Grouped by that letter (``by_first_character``: the same matches)."""
    text = resources.files("opsgate.guard").joinpath("data/street_types.txt").read_text(encoding="utf-8")
    words = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    longest_first = sorted(set(words), key=len, reverse=True)
    return by_first_character([(f"[{w[0].upper()}{w[0].lower()}]", re.escape(w[1:])) for w in longest_first])


_NAME = r"[A-Z\u00C0-\u00DE][\w'\u2019.-]{0,30}"  # a capitalised word (accents included)
_UNIT = (
    r"(?:,?\s{1,3}(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Fl\.?|Room|Rm\.?|Box|#)"
    r"\s{0,3}#?\s{0,2}[\w-]{1,6})"
)
_US_TAIL = rf"(?:,?\s{{1,3}}{_NAME}(?:\s{_NAME}){{0,3}},?\s{{1,3}}[A-Z]{{2}}\s{{1,3}}\d{{5}}(?:-\d{{4}})?)"
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}"
_UK_TAIL = rf"(?:,?\s{{1,3}}(?:{_NAME}(?:\s{_NAME}){{0,2}},?\s{{1,3}})?{_UK_POSTCODE}\b)"
_EU_TAIL = (
    rf"(?:,?\s{{1,3}}(?:[A-Z]{{1,2}}-)?\d{{4,5}}(?:-\d{{3}})?,?\s{{1,3}}{_NAME}(?:[\s-]{_NAME}){{0,2}}"
    rf"(?:\s?\([A-Z]{{2}}\)|\s/\s[A-Z]{{2}})?"
    rf"|,?\s{{1,3}}{_NAME}(?:\s{_NAME}){{0,2}},\s{{1,3}}\d{{5}}\b)"
)
_CA_TAIL = rf"(?:,?\s{{1,3}}{_NAME}(?:\s{_NAME}){{0,3}},?\s{{1,3}}[A-Z]{{2}}\s{{1,3}}[A-Z]\d[A-Z]\s?\d[A-Z]\d\b)"
_EN_STREET = (
    rf"(?:(?:(?:Flat|Apt\.?|Apartment|Unit|Suite|Studio)\s{{1,3}}\d{{1,5}}[A-Za-z]?,?\s{{1,3}})?"
    rf"\d{{1,6}}[A-Za-z]?(?:[-/]\d{{1,5}})?,?\s{{1,3}}"
    rf"|(?:Flat|Apt\.?|Apartment|Unit|Suite|Studio)\s{{1,3}}\d{{1,5}}[A-Za-z]?,?\s{{1,3}})"
    rf"(?:{_NAME}\s{{1,3}}){{1,4}}(?:{_street_types()})\b\.?{_UNIT}?"
)
_CONTINENTAL = (
    r"(?:[A-Z\u00C0-\u00DE][\w\u00DF-]{1,30}"
    r"(?:[Ss]tra(?:ß|ss)e|[Ss]tr\.|[Gg]asse|[Ww]eg|[Pp]latz|[Aa]llee|[Rr]ing|[Dd]amm|[Uu]fer|straat|laan|plein"
    r"|singel|gracht|kade|dijk|gatan|vägen|gränd|torget|stigen|vej|gade)"
    r"|(?:Calle|Avenida|Avda\.?|Av\.|Plaza|Paseo|Camino|Carrer|Ronda|Callejón|Glorieta|Rambla|Via|Viale|Piazza"
    r"|Piazzale|Corso|Largo|Vicolo|Strada|Stretto|Contrada|Borgo|Rotonda|Incrocio|Canale|Rua|Travessa|Alameda"
    r"|Viela|Rodovia|Praça|Ladeira|Avenida|Estrada|Acceso|Cañada|Vial|Pasadizo|Pasaje|Carretera|Travesía|Cuesta"
    r"|Urbanización|Ulica|ulica|ul\.|Aleja|aleja|al\.|Plac|plac|Osiedle|osiedle)"
    r"(?:\s{1,3}(?:de|del|de la|de los|de las|dos|das|do|da|di|della|delle|dei|degli)){0,2}"
    r"(?:\s{1,3}" + _NAME + r"){1,4})"
    r",?\s{1,3}(?:n\.?\s?º?\s{0,2})?\d{1,5}[A-Za-z]?(?:\s?[/-]\s?\d{1,5}[A-Za-z]?)?"
    r"(?:,?\s{1,3}(?:Puerta|Piso|Esc\.|Appartamento|Piano|Interno|Apto\.?|Apt\.?|lok\.?|m\.)\s{0,3}[\w/º-]{1,6}){0,2}"
)
_FRENCH_STREETS = [
    "rue", "avenue", "boulevard", "bd", "place", "chemin", "allée", "impasse", "quai", "route", "cours", "square",
    "passage", "voie",
]  # fmt: skip
_FRENCH = (
    r"(?:\d{1,4}(?:\s?(?:bis|ter))?,?\s{1,3})?"
    rf"(?:{'|'.join(_FRENCH_STREETS)})"
    r"(?:\s{1,3}(?:de|du|des|de la|d'|l'|la|le|les)){0,2}\s{0,3}" + _NAME + r"(?:[\s-]{1,3}" + _NAME + r"){0,3}"
)
# USPS forms with no street: post-office boxes and military addresses (ship, unit or PSC; APO/FPO/DPO).
_USPS = (
    rf"(?:(?:P\.?\s?O\.?\s?Box|Post\sOffice\sBox)\s{{1,3}}\d{{1,6}}{_US_TAIL}?"
    rf"|(?:(?:USNS|USNV|USS|USCGC)\s{{1,3}}{_NAME}|(?:PSC|Unit)\s{{1,3}}\d{{4}},?\s{{1,3}}Box\s{{1,3}}\d{{4}})"
    rf",?\s{{1,3}}(?:APO|FPO|DPO)\s{{1,3}}(?:AA|AE|AP)\s{{1,3}}\d{{5}})"
)
_ADDRESS = re.compile(
    rf"(?<![\w-])(?:{_USPS}|{_EN_STREET}(?:{_US_TAIL}|{_CA_TAIL}|{_UK_TAIL}|{_EU_TAIL})?"
    rf"|{_CONTINENTAL}{_EU_TAIL}?"
    rf"|(?<![A-Za-z]){_FRENCH}{_EU_TAIL}?)"
)
# A French street needs its house number or a postcode: "rue" alone starts many sentences.
_FRENCH_OK = re.compile(r"^\d|\d{5}")

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
# Month names of the marker languages below (Spanish, Portuguese, French, German, Italian, Dutch), any case, after
# the day as written there: "5 de marzo de 1990", "5 mars 1990", "5. März 1990", "1er janvier 1990".
_MONTH_NAMES = [
    "enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "setiembre", "octubre",
    "noviembre", "diciembre",
    "janeiro", "fevereiro", "março", "maio", "junho", "julho", "setembro", "outubro", "novembro", "dezembro",
    "janvier", "février", "fevrier", "mars", "avril", "mai", "juin", "juillet", "août", "aout", "septembre",
    "octobre", "décembre", "decembre",
    "januar", "jänner", "februar", "märz", "maerz", "juni", "juli", "oktober", "dezember",
    "gennaio", "febbraio", "aprile", "maggio", "giugno", "luglio", "settembre", "ottobre", "dicembre",
    "januari", "februari", "maart", "mei", "augustus",
    "april", "august", "september", "november", "december",  # shared with English, where they are capitalised
]  # fmt: skip
_MONTH_NAME = "|".join(sorted(set(_MONTH_NAMES), key=len, reverse=True))
_DAY_MONTH_YEAR = rf"\d{{1,2}}(?:er|º|ª)?\.?\s{{1,2}}(?:de\s{{1,2}})?(?i:{_MONTH_NAME})\s{{1,2}}(?:de\s{{1,2}})?\d{{4}}"
_DATE = (
    rf"(?:\d{{4}}[/.-]\d{{1,2}}[/.-]\d{{1,2}}|\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}|{_DAY_MONTH_YEAR}"
    rf"|\d{{1,2}}[-\s]{_MONTH}[-\s]\d{{2,4}}"
    rf"|{_MONTH}\s{{1,2}}\d{{1,2}}(?:st|nd|rd|th)?,?\s{{1,2}}\d{{4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s{{1,2}}(?:of\s)?{_MONTH},?\s{{1,2}}\d{{4}})"
)
# The marker in English, and in Spanish, Portuguese, French, German, Italian and Dutch ("fecha de
# nacimiento", "nasceu em", "né le", "geboren am", "nata il", "geboortedatum").
_DOB_MARKERS = (
    r"date\sof\sbirth|birth\s?date|birthday|d\.?o\.?b\.?|born(?:\s(?:on|in))?"
    r"|fecha\sde\snacimiento|nacid[oa]\s(?:el|en)|naci[oó]\s(?:el|en)|f\.\s?nac\."
    r"|data\sde\snascimento|nascid[oa]\s(?:em|a)|nasceu\s(?:em|a)"
    r"|date\sde\snaissance|n[éÉ]e?\sle"
    r"|geburtsdatum|geboren\s(?:am|den)|geb\."
    r"|data\sdi\snascita|nat[oa]\sil"
    r"|geboortedatum|geboren\sop"
)
_DOB = re.compile(
    rf"(?i:\b(?:{_DOB_MARKERS})(?!\w))"
    rf"\s{{0,3}}[:=-]?\s{{0,3}}(?:is\s|was\s)?(?P<date>{_DATE}|(?<=in\s)(?:19|20)\d{{2}}\b)"
)
_AGE = re.compile(
    r"(?i:\bage[ds]?\b\s{0,3}(?:of\s|is\s|was\s|:|=|-)?\s{0,3})(?P<a>\d{1,3})\b(?!\s?(?:%|kg|km|cm|years?\sago))"
    r"|(?<![\d.,])(?P<b>\d{1,3})(?:\s|-)(?i:years?|yrs?)(?:\s|-)(?i:old)\b"
)


_RUNS: dict[int, re.Pattern[str]] = {}


def _digit_windows(
    text: str, before: int = 160, after: int = 300, runs: tuple[NDArray[np.intp], NDArray[np.intp]] | None = None
) -> list[tuple[int, int]]:
    """Merged spans around each run of digits: every address has a house number or a postcode.

    ``runs``: ``digit_runs(text)``, where the caller has them."""
    # Runs of digits closer than before + after characters share a window: one step per cluster of runs
    # instead of a Python step per run of digits (dense text has thousands), the clusters found by numpy
    # (``re`` took ~1-1.7 ms per 32 KB for ``\d+(?:\D{0,460}\d+)*``).
    if runs is None and len(text) < SHORT:
        # A short text: one ``re`` pass costs less than numpy's fixed cost per call.
        gap = _RUNS.get(before + after) or _RUNS.setdefault(
            before + after, re.compile(rf"\d+(?:\D{{0,{before + after}}}\d+)*")
        )
        found = [run.span() for run in gap.finditer(text)]
    else:
        found = clusters(*(runs if runs is not None else digit_runs(text)), before + after)
    spans: list[tuple[int, int]] = []
    for start, end in found:
        low, high = max(0, start - before), min(len(text), end + after)
        if spans and low <= spans[-1][1]:
            spans[-1] = (spans[-1][0], high)
        else:
            spans.append((low, high))
    return spans


# The town after an address ("…, Via Roma 10, Nembro."): a place, even where the model misses it.
_TOWN_AFTER = re.compile(
    rf",\s{{1,3}}({_NAME}(?:[\s-](?:(?:de|da|das|do|dos|di|della|e|sur|am|an)\s)?{_NAME}){{0,3}})(?=[.,;:!?)\n]|$)"
)


# Where an address can start: every alternative of _ADDRESS begins with a digit (the start of a run of them:
# no match starts after a word character), with one of these words (their first letters at least: "P" for
# "P.O. Box", "Post", "PSC" and the Plaza, Piazza, … of _CONTINENTAL), or with a capital at most 31 characters
# before one of the continental street suffixes ("Hauptstraße", "Kranzstr.").
_DIGIT_RUN = re.compile(r"\d+")
_CAPITAL = re.compile(r"[A-Z\u00C0-\u00DE]")
_WORD_STARTS = (
    "P", "US", "Unit", "Flat", "Apt", "Apartment", "Suite", "Studio", "Calle", "Av", "Camino", "Carre", "Ronda",
    "Glorieta", "Rambla", "Vi", "Corso", "Largo", "Strada", "Stretto", "Contrada", "Borgo", "Rotonda", "Incrocio",
    "Canale",
    "Rua", "Traves", "Alameda", "Rodovia", "Ladeira", "Estrada", "Acceso", "Cañada", "Cuesta", "Urbanización",
    "Ulica", "ulica", "ul.", "Aleja", "aleja", "al.", "plac", "Osiedle", "osiedle", *_FRENCH_STREETS,
)  # fmt: skip
_SUFFIXES = (
    "Straße", "straße", "Strasse", "strasse", "Str.", "str.", "Gasse", "gasse", "Weg", "weg", "Platz", "platz",
    "Allee", "allee", "Ring", "ring", "Damm", "damm", "Ufer", "ufer", "straat", "laan", "plein", "singel", "gracht",
    "kade", "dijk", "gatan", "vägen", "gränd", "torget", "stigen", "vej", "gade",
)  # fmt: skip

# One pass for both lists: their strings grouped by first character (``re`` tries one group per position).
_LITERALS = re.compile(by_first_character([(re.escape(w[0]), re.escape(w[1:])) for w in (*_WORD_STARTS, *_SUFFIXES)]))
# The same strings for RE2, which finds them in an ASCII text without trying each position in Python's
# engine (``re`` tried a group at ~65% of a docstring's positions: ~0.7 ms per 32 KB, for ~40 hits).
_LITERALS_LINEAR = compile_linear(_LITERALS.pattern)
_LONGEST = max(len(word) for word in (*_WORD_STARTS, *_SUFFIXES))


# Every occurrence of the strings, by numpy (``Literals``): in a text of ``SHORT`` characters or more, any text.
_LITERAL_STRINGS = Literals((*_WORD_STARTS, *_SUFFIXES))


def _literal_regions(text: str) -> list[tuple[int, int]] | None:
    """Where ``_LITERALS`` can match in ``text``: spans that hold every occurrence of its strings whole, those
    that overlap merged. A long text's: the occurrences themselves (``_LITERAL_STRINGS``); a short ASCII text's:
    every string that occurs starts inside one of RE2's (non-overlapping) matches, so it lies in that match's
    start to its end + ``_LONGEST`` - 1. None: a short text that is not ASCII (``_LITERALS`` runs over whole
    windows; RE2's non-ASCII offsets cost a pass over the text before each match)."""
    if len(text) >= SHORT:
        spans = [(at, at + len(string)) for at, string in _LITERAL_STRINGS.find(text)]
    elif text.isascii():
        spans = [(hit.start(), hit.end() + _LONGEST - 1) for hit in _LITERALS_LINEAR.finditer(text)]
    else:
        return None
    regions: list[tuple[int, int]] = []
    for start, reach in spans:
        if regions and start < regions[-1][1]:
            regions[-1] = (regions[-1][0], max(regions[-1][1], reach))
        else:
            regions.append((start, reach))
    return regions


def _region_end(region: tuple[int, int]) -> int:
    return region[1]


def _literal_hits(text: str, low: int, high: int, regions: list[tuple[int, int]] | None) -> Iterator[re.Match[str]]:
    """``_LITERALS.finditer(text, low, high)``, run only in the ``regions`` (``_literal_regions``) it meets.

    The same hits: no string starts between regions, and a hit starting in one ends inside it, so the scan
    of the window reaches each region's start with no hit pending, and what it finds there is what a
    scan of the region (cut to the window) finds."""
    if regions is None:
        yield from _LITERALS.finditer(text, low, high)
        return
    # Regions do not overlap: sorted by start, they are sorted by end too.
    for region_low, region_high in regions[bisect.bisect_right(regions, low, key=_region_end) :]:
        if region_low >= high:
            return
        yield from _LITERALS.finditer(text, max(low, region_low), min(high, region_high))


def _address_matches(
    text: str,
    low: int,
    high: int,
    runs: tuple[NDArray[np.intp], NDArray[np.intp]] | None = None,
    regions: list[tuple[int, int]] | None = None,
    houses: NDArray[np.intp] | None = None,
) -> Iterator[re.Match[str]]:
    """``_ADDRESS.finditer(text, low, high)``, tried only where a match can start (as ``pii._matches``):
    ``re`` tried every alternative at every word (~0.15 ms per KB of windows). ``runs``: ``digit_runs(text)``;
    ``regions``: ``_literal_regions(text)``; ``houses``: ``_house_numbers(text, runs)``, the runs of digits
    that can start an address (in place of ``runs``' starts)."""
    if houses is not None:
        starts = set(houses[np.searchsorted(houses, low) : np.searchsorted(houses, high)].tolist())
    elif runs is None:
        starts = {m.start() for m in _DIGIT_RUN.finditer(text, low, high)}
    else:
        # The starts of ``_DIGIT_RUN.finditer(text, low, high)``: the runs that end after ``low`` and start before
        # ``high``, one cut at ``low``.
        first, last = np.searchsorted(runs[1], low, side="right"), np.searchsorted(runs[0], high)
        starts = set(np.maximum(runs[0][first:last], low).tolist())
    for hit in _literal_hits(text, low, high, regions):
        # A hit may start an address itself, or end one ("Hauptstraße": the capital 2 to 31 characters
        # before a suffix). Hits do not overlap, so a suffix may also start inside this hit ("Calle" and
        # "allee"): the capitals up to the hit's end count too.
        at = hit.start()
        starts.add(at)
        starts.update(m.start() for m in _CAPITAL.finditer(text, max(low, at - 31), hit.end()))
    return matches_at(_ADDRESS.match, text, sorted(starts), low, high)


# What may stand before and after the digits that start an address: the digits are ``\d{1,6}`` (English) or
# ``\d{1,4}`` (French) after no word character nor '-' (``(?<![\w-])``), then a letter, '-', '/', ',' or
# whitespace (``[A-Za-z]?(?:[-/]\d{1,5})?,?\s``; ``\s?(?:bis|ter)``). Every other alternative starts with a
# letter. ASCII only: a character above 127 before or after the run keeps it (it may be a letter or a space).
_WORD_OR_DASH = np.array([re.match(r"[\w-]", chr(code)) is not None for code in range(128)] + [False], dtype=bool)
_AFTER_HOUSE = np.array([re.match(r"[A-Za-z,/\s-]", chr(code)) is not None for code in range(128)] + [True], dtype=bool)


def _house_numbers(text: str, runs: tuple[NDArray[np.intp], NDArray[np.intp]]) -> NDArray[np.intp]:
    """The starts of the runs of digits (``digit_runs(text)``) at which ``_ADDRESS`` can match: at most six digits,
    neither a word character nor '-' before, what can follow a house number after. A number in code or prose
    ("version 3.1", "(2)", "x2") starts none: ``re`` tried the whole pattern at each (~1 us)."""
    starts, ends = runs
    codes = char_codes(text)
    top = len(_WORD_OR_DASH) - 1
    before = np.minimum(codes[np.maximum(starts - 1, 0)], top)
    after = np.minimum(codes[np.minimum(ends, len(codes) - 1)], top)
    keep = (ends - starts <= 6) & ((starts == 0) | ~_WORD_OR_DASH[before])
    keep &= (ends == len(codes)) | _AFTER_HOUSE[after]
    houses: NDArray[np.intp] = starts[keep]
    return houses


def find_addresses(text: str) -> list[Finding]:
    """Street addresses, with their postcode and town when these follow; a town after one is a location."""
    found = []
    # Only near digits: the pattern tries 375 street types at every capitalised word, ~0.08 ms per KB.
    runs = digit_runs(text) if len(text) >= SHORT else None  # a short text's by ``re`` (``_address_matches``)
    windows = _digit_windows(text, 160, 300, runs)
    regions = _literal_regions(text) if windows else None
    houses = _house_numbers(text, runs) if runs is not None and windows else None
    for low, high in windows:
        for match in _address_matches(text, low, high, runs, regions, houses):
            value = trim(match.group())
            if value[:1].isalpha() and value.split()[0].lower() in _FRENCH_WORDS and not _FRENCH_OK.search(value):
                continue
            found.append(Finding("street_address", match.start(), match.start() + len(value), value))
            town = _TOWN_AFTER.match(text, match.start() + len(value))
            if town is not None:
                name = trim(town.group(1))
                found.append(Finding("location", town.start(1), town.start(1) + len(name), name))
    return found


_FRENCH_WORDS = {"rue", "avenue", "boulevard", "bd", "place", "chemin", "allée", "impasse", "quai", "route"}
_FRENCH_WORDS |= {"cours", "square", "passage", "voie"}


# Where a match of _DOB or _AGE can start, in the lowered text: at its marker word ("date of birth", "birth
# date", "birthday", "d.o.b", "born"; "age"), or (the "34 years old" form) 2 to 4 characters before "year" or
# "yr" (1-3 digits and a space or '-'). Offsets: (string, how far before it).
_DOB_STARTS = (
    ("date", 0), ("birth", 0), ("born", 0), ("dob", 0), ("d.ob", 0), ("do.b", 0), ("d.o.b", 0),
    ("fecha", 0), ("nacid", 0), ("naci", 0), ("f.", 0), ("data", 0), ("nascid", 0), ("nasceu", 0), ("né", 0),
    ("née", 0), ("geburtsdatum", 0), ("geboren", 0), ("geb.", 0), ("nato", 0), ("nata", 0), ("geboortedatum", 0),
)  # fmt: skip
# Words one of the markers holds: a text with none of them has no marked date of birth.
_DOB_WORDS = ("birth", "born", "dob", "d.o.b", "nac", "nasc", "naiss", "né", "geb", "nato", "nata", "geboorte")
_AGE_STARTS = (("age", 0), *((marker, back) for marker in ("year", "yr") for back in (2, 3, 4)))
_AGE_WORDS = ("age", "year", "yr")
# Which of the two word lists occur in a lowered text, in one RE2 pass: a ``str`` search per word (~20 us each
# per 32 KB of prose, most of them reading it to the end) cost ~0.3 ms a text.
_MARKER_SET = LinearSet(
    [compile_linear("|".join(map(re.escape, words)), ascii_as_bytes=True) for words in (_DOB_WORDS, _AGE_WORDS)]
)


def _markers(lowered: str) -> tuple[bool, bool]:
    """Whether ``lowered`` holds one of ``_DOB_WORDS``, and one of ``_AGE_WORDS`` (substrings, as ``in`` reads)."""
    try:
        found = _MARKER_SET.matching(lowered)
    except UnicodeEncodeError:  # a lone surrogate: RE2 reads UTF-8
        return any(word in lowered for word in _DOB_WORDS), any(word in lowered for word in _AGE_WORDS)
    return 0 in found, 1 in found


# Characters that ``re.I`` reads as an ASCII letter though ``str.lower`` keeps them (dotless i and long s,
# U+0131 and U+017F, are 'i' and 's' to it) or lowers them to two characters (U+0130), and the Kelvin sign:
# in a text with one, the starts are not looked for.
_FOLDED = "\u0131\u017f\u0130\u212a"


def _tried_in(
    pattern: re.Pattern[str],
    text: str,
    lowered: str,
    windows: list[tuple[int, int]],
    starts: tuple[tuple[str, int], ...],
) -> Iterator[re.Match[str]]:
    """``finditer_in(pattern, text, windows)`` for a case-insensitive pattern whose matches all begin at one of
    ``starts`` (found in ``lowered``, ``text.lower()``): it is tried there only, not at every position (~0.1 ms
    per KB of windows in a text dense with digits and markers).

    Where lowering changed the length (its offsets are not the text's) or ``re.I`` folds a character of the
    text that lowering does not: ``finditer_in``.
    """
    if len(lowered) != len(text) or any(ch in text for ch in _FOLDED):
        yield from finditer_in(pattern, text, windows)
        return
    find = lowered.find
    for low, high in windows:
        places = set()
        for marker, back in starts:
            at = find(marker, low, high)
            while at >= 0:
                places.add(at - back)
                at = find(marker, at + 1, high)
        resume = low
        for at in sorted(places):
            if at < resume:
                continue
            match = pattern.match(text, at, high)
            if match is not None:
                yield match
                resume = match.end()


def find_marked_dates_and_ages(text: str) -> list[Finding]:
    """Dates the text calls a birth date, and numbers it calls an age (0-120)."""
    # The patterns run only where their marker words are: most texts have none (a 32 KB scan costs ~2 ms).
    lowered = text.lower()
    found: list[Finding] = []
    dob, age = _markers(lowered)
    if not (dob or age):
        return found
    # Every match holds a digit, its marker at most ~40 characters before it and the rest (with the
    # lookaheads) at most ~30 after: both patterns run only in windows around the runs of digits.
    windows = _digit_windows(text, 64, 64)
    if dob:
        dates = _tried_in(_DOB, text, lowered, windows, _DOB_STARTS)
        found += [Finding("date_of_birth", m.start("date"), m.end("date"), m.group("date")) for m in dates]
    if not age:
        return found
    for match in _tried_in(_AGE, text, lowered, windows, _AGE_STARTS):
        group = "a" if match.group("a") is not None else "b"
        if int(match.group(group)) <= 120:
            found.append(Finding("age", match.start(group), match.end(group), match.group(group)))
    return found
