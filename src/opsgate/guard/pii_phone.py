"""Phone numbers in any region, with extensions: which candidates are phone numbers.

A candidate (digits with the separators people type) is a phone number when

- it is international (``+44 …``, ``0044 …``) and a possible number for that country code; or
- it is in a national format (``(415) 555-2671``, ``020 7946 0958``, ``06-12345678``) and valid in
  a region: the configured ones, those whose names appear near it ("our office in Sweden"), or a
  fixed list of the most populous trunk-prefix regions; or
- a phone word ("call", "mobile", "tel") stands just before it and it is a possible number there.

Validity alone is not enough: most 10-digit ids and many dates are valid numbers somewhere, hence
the format or the word. Extensions (``ext. 123``, ``x123``, ``#123``) belong to the number.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import phonenumbers
from phonenumbers.geodata.locale import LOCALE_DATA

from opsgate.guard.pii_base import by_first_character

# Words that say a phone number follows or is near (matched on lower-cased text): English, and the same in
# the other languages people write numbers in (teléfono, telefone, Telefon, telefonu, téléphone, τηλέφωνο,
# телефон, puhelin, móvil, telemóvel, celular, cellulare, Handy, GSM, portable, mobiel; "call me": llámame,
# ligue, appelez, anrufen, chiamami, zadzwoń; 電話, 전화).
_PHONE_WORDS = (
    "phone", "call", r"tel\b", r"tel\.", "telephone", "mobile", "cell", "fax", "whatsapp", "sms", r"text\b",
    "reach me", "dial", "ring", "hotline", "helpdesk", "landline", "contact", "helpline", "switchboard",
    "tel[eé]f", "t[eé]l[eé]ph", "τηλ[εέ]φ", "телеф", "puhelin", "m[oó]vil", "telem[oó]vel", "celular",
    "cellulare", "handy", "gsm", "portable", "mobiel", "mobil", "kontakt", "llam", "ligue", "appel", "anruf",
    "chiam", "zadzwo", "電話", "전화",
)  # fmt: skip
# Grouped by first character (``by_first_character``): ``re`` tries one group at a place, not all 43 words.
PHONE_CONTEXT = re.compile(by_first_character([(word[0], word[1:]) for word in _PHONE_WORDS]))
# North American formats: (415) 555-2671, 415-555-2671, 415.555.2671, 415 555 2671.
_NANP = re.compile(r"(?:\+?1[\s.-]?|001[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}")
_EXTENSION = re.compile(r"\s{0,2}(?:ext\.?|extension|x|#)\s{0,2}(\d{1,6})$", re.I)
# Where a region cannot be read from the number or its context, these are tried: the regions with
# the most telephone users that write a national trunk prefix or use separators (ITU, 2023).
_FALLBACK_REGIONS = (
    "US", "GB", "DE", "FR", "IN", "BR", "IT", "ES", "JP", "MX", "AU", "CA", "NL", "PL", "SE", "IE",
    "AT", "CH", "BE", "PT", "RU", "TR", "ZA", "NG", "KR", "CN", "ID", "PH", "AR", "CO",
)  # fmt: skip


# Country names are read in these languages too ("España", "Deutschland", "Ελλάδα"): scripts with word
# boundaries, so a name is matched as a word (not Chinese, Japanese or Thai).
_NAME_LANGUAGES = ("en", "es", "pt", "it", "fr", "de", "nl", "da", "sv", "nb", "fi", "pl", "cs", "el", "ru", "tr")


def _country_names() -> dict[str, str]:
    """Country name (lower case) → region code, in English and ``_NAME_LANGUAGES``, from phonenumbers' locale
    data; a name two regions share in different languages is left out."""
    names: dict[str, str] = {}
    shared: set[str] = set()
    for region, by_language in LOCALE_DATA.items():
        if len(region) != 2:
            continue
        for language in _NAME_LANGUAGES:
            name = by_language.get(language, "")
            if name.startswith("*"):
                name = by_language.get(name[1:], "")
            name = name.lower()
            if len(name) < 4:
                continue
            if names.get(name, region) != region:
                shared.add(name)
            names[name] = region
    for name in shared:
        del names[name]
    names.update({"uk": "GB", "england": "GB", "scotland": "GB", "wales": "GB", "britain": "GB"})
    names.update({"usa": "US", "america": "US", "holland": "NL", "the netherlands": "NL"})
    return names


class PhoneRules:
    """Decides whether a candidate is a phone number; built once (patterns compiled), thread-safe."""

    def __init__(self, regions: Iterable[str]) -> None:
        self.regions = tuple(regions)
        self._names = _country_names()
        alternatives = sorted(self._names, key=len, reverse=True)
        # Matched against the lowered context: with re.I, the 250 alternatives cost ~5x as much. Grouped by
        # first character (``by_first_character``, the same matches): ``re`` tried all 250 at every position
        # (~28 us a 170-character context, 26 contexts in a dense 32 KB text), now one group.
        grouped = by_first_character([(re.escape(name[0]), re.escape(name[1:])) for name in alternatives])
        self._country = re.compile(r"\b(" + grouped + r")\b")

    def regions_near(self, context: str) -> list[str]:
        """Regions whose country names appear in ``context``."""
        if _NAME_LETTERS.search(context) is None:
            return []  # no word a country name could be (runs of digits and separators): skip the big pattern
        return [self._names[m.group(1)] for m in self._country.finditer(context.lower())]

    def is_phone(self, value: str, before: str = "", around: str = "") -> bool:
        """Whether ``value`` is a phone number, given the text ``before`` it and a window ``around`` it."""
        # Every extension form holds an 'x' or a '#' ("ext", "extension", "x", "#"; re.I folds no other
        # character to them): without one there is nothing to cut.
        main = _EXTENSION.sub("", value) if "x" in value or "X" in value or "#" in value else value
        if not 7 <= len(_NON_DIGIT.sub("", main)) <= 15:
            return False
        stripped = main.lstrip("(")
        if stripped.startswith("+") or (stripped.startswith("00") and not stripped.startswith("000")):
            international = "+" + stripped.lstrip("+")[2:] if stripped.startswith("00") else stripped
            return _possible(international, None)
        if len(_NON_DIGIT.sub("", main)) > 12:
            return False  # national numbers stop at 12 digits; a longer run is a card or an account
        if _NANP.fullmatch(main) and _possible(main, "US"):
            return True
        # The context is read only where a rule below needs it: most candidates are settled above.
        worded = PHONE_CONTEXT.search(before.lower()) is not None
        grouped = _SEPARATED.search(main) is not None  # digits with separators between them, read once
        separated = grouped and main.startswith(("0", "("))
        bare = not separated and _BARE_TRUNK.fullmatch(main) is not None
        if not (worded or grouped or bare):
            return False
        near = self.regions_near(around)
        regions = [*near, *self.regions]
        if worded and any(_possible(main, r) for r in regions):
            return True
        if separated:
            return any(_valid(main, r) for r in dict.fromkeys([*regions, *_FALLBACK_REGIONS]))
        if worded and grouped:
            # A phone word before a number grouped as people write one, in a region without a trunk prefix
            # (Spain, Portugal, Denmark, Poland …: "612 34 56 78"): valid in a region named near it or a likely one.
            return any(_valid(main, r) for r in dict.fromkeys([*regions, *_FALLBACK_REGIONS]))
        if near and grouped:
            # The country is named near a grouped number ("our office in Denmark: 32 12 34 56"): valid there.
            return any(_valid(main, r) for r in near)
        # Bare digits with a trunk 0 ("0361717565"): a phone word somewhere near, and valid somewhere.
        if bare and PHONE_CONTEXT.search(around.lower()):
            return any(_valid(main, r) for r in dict.fromkeys([*regions, *_FALLBACK_REGIONS]))
        return False


_NON_DIGIT = re.compile(r"\D")
_NAME_LETTERS = re.compile(r"[^\W\d_]{4}")  # four letters in a row: every country name read has them
_SEPARATED = re.compile(r"\d[\s.()/-]+\d")
_BARE_TRUNK = re.compile(r"0[1-9]\d{7,10}")


# One parse per (candidate, region), shared by ``_possible`` and ``_valid``: a candidate after a phone word is
# asked both of the same regions (~1 in 12 of a dense text's parses). Never changed after parsing (the two
# checks only read it), so one object may be handed out many times.
@functools.lru_cache(maxsize=8192)
def _parse(value: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None


# ``phonenumbers`` reads a candidate in ~40 us: the answers for the most recent (candidate, region) pairs
# are kept, bounded, so a chat's history (re-sent with every turn) is not read again. Thread-safe.
@functools.lru_cache(maxsize=8192)
def _possible(value: str, region: str | None) -> bool:
    number = _parse(value, region)
    return number is not None and phonenumbers.is_possible_number(number)


@functools.lru_cache(maxsize=8192)
def _valid(value: str, region: str) -> bool:
    number = _parse(value, region)
    return number is not None and phonenumbers.is_valid_number(number)


def clear_cache() -> None:
    """Forget the remembered answers (benchmarks of text never seen)."""
    _possible.cache_clear()
    _valid.cache_clear()
    _parse.cache_clear()
