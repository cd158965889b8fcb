"""PII: structured identifiers found by one compiled pattern and confirmed by a validator; addresses,
marked dates of birth and ages by pattern (``pii_address``); names, places and organisations by
a fast linear model over capitalised words (``pii_fast``, the default) or spaCy's NER model
(``pii_ner``), with legal forms and cue words (``pii_names``) beside either.

Structured kinds: email, phone, credit card, IBAN, IP address, and national ids (US SSN and ITIN,
UK NINO, Spanish DNI/NIE, Italian codice fiscale, Indian Aadhaar).

A pattern alone over-matches (any 16 digits look like a card), so every candidate is checked the way
the identifier itself is: cards by Luhn and issuer prefix, IBANs by country length and mod-97
(``python-stdnum``), US SSNs by stdnum's area/group/serial rules, phone numbers by Google's
``phonenumbers`` metadata in any region (``pii_phone``), IP addresses by ``ipaddress``. Where two
recognisers claim the same text, the validated identifier wins over the address pattern, and
both win over the model's guess.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from stdnum import iban, luhn
from stdnum.es import dni, nie
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.us import itin, ssn

from opsgate.domain.guard_config import PiiEntity, PiiScannerConfig
from opsgate.guard.base import ScanContext, ScanDeadline, ScanResult, TextCache, Vault
from opsgate.guard.pii_address import find_addresses, find_marked_dates_and_ages
from opsgate.guard.pii_base import (
    SHORT,
    Finding,
    clusters,
    digit_runs,
    merge_windows,
    resolve_overlaps,
)
from opsgate.guard.pii_fast import FastNameRecognizer
from opsgate.guard.pii_names import correct_kind, find_cued_names, find_organisations
from opsgate.guard.pii_ner import NER_KINDS, NameRecognizer, NerResult
from opsgate.guard.pii_phone import PhoneRules
from opsgate.guard.pii_places import PLACES_FROM as _PLACES_FROM
from opsgate.guard.pii_places import may_match as _may_match
from opsgate.guard.pii_places import start_places_in as _start_places_in
from opsgate.guard.pii_unhide import original_span, unhide

NerChoice = Literal["fast", "spacy", "off"]

__all__ = ["Finding", "PiiDetector", "PiiScanner", "replace_findings", "restore", "split_partial_placeholder"]

# An email: its local part, then '@', then its domain (the domain's match is the same whatever the local part).
_EMAIL_LOCAL = r"\b[A-Za-z0-9][A-Za-z0-9._%+-]*"
_EMAIL_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"
_PATTERN = re.compile(
    rf"(?P<email>{_EMAIL_LOCAL}@{_EMAIL_DOMAIN})"
    r"|(?P<iban>\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b)"
    r"|(?P<ipv6>(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:]))"
    r"|(?P<ipv4>(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d))"
    r"|(?P<ssn>(?<![\w-])\d{3}(?P<sep>[- ])\d{2}(?P=sep)\d{4}(?![\w-]))"
    r"|(?P<it_fiscal_code>(?<![\w-])[A-Za-z]{6}\d{2}[A-Za-z]\d{2}[A-Za-z]\d{3}[A-Za-z](?![\w-]))"
    r"|(?P<uk_nino>(?<![\w-])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w-]))"
    r"|(?P<es_nie>(?<![\w-])[XYZxyz]-?\d{7}-?[A-Za-z](?![\w-]))"
    r"|(?P<es_dni>(?<![\w-])\d{8}-?[A-Za-z](?![\w-]))"
    r"|(?P<in_aadhaar>(?<![\w-])[2-9]\d{3}(?P<asep>[ -])\d{4}(?P=asep)\d{4}(?![\w-]|\s?\d))"
    r"|(?P<card>(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-]))"
    r"|(?P<ssn_bare>(?<![\w-])\d{9}(?![\w-]))"
    r"|(?P<phone>(?<![\w+])(?:\+\s?\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,5}"
    r"(?:\s{0,2}(?:ext\.?|extension|x|\#)\s{0,2}\d{1,6})?(?!\w))"
)
# Where an identifier can be: digits, '@' or ':' — the full pattern runs only in windows around them
# (``_windows``), because scanning every position of a long prose text with it costs ~0.4 ms per KB.
_MERGE_GAP = 8
_VERSION_CONTEXT = re.compile(r"(?:version|release|build|\bv)\s*$", re.I)
_SSN_CONTEXT = re.compile(r"(ssn|social security|social-security|tax id|taxpayer)", re.I)
# Issuer prefixes (IIN ranges) of the card networks: Visa, Mastercard (51-55, 2221-2720), Amex, Diners,
# Discover, JCB, UnionPay, Maestro (50, 56-69), Mir (2200-2204), RuPay (60, 65), Verve (506, 650).
_CARD_PREFIX = re.compile(r"^(4|5[0-9]|2(2[0-9]|[3-6]\d|7[01]|720)|3[04578]|6)")
_MAESTRO_12 = re.compile(r"^(5018|5020|5038|5893|6304|6759|676[1-3]|0604|6390)")
# Luhn passes one random number in ten: an unknown prefix needs a card word before it.
_CARD_CONTEXT = re.compile(
    r"(card|visa|mastercard|master card|amex|american express|credit|debit|maestro|"
    r"discover|jcb|diners|unionpay|\bcc\b|payment|pan\b)",
    re.I,
)
# A date (15.03.1985, 03-15-1985, 2024-03-15) is never a phone number, whatever region would accept it.
_DATE_LIKE = re.compile(r"\d{1,2}([./-])\d{1,2}\1\d{2,4}|\d{4}([./-])\d{1,2}\2\d{1,2}")
_KIND = {
    "email": "email",
    "iban": "iban",
    "ipv6": "ip_address",
    "ipv4": "ip_address",
    "ssn": "us_ssn",
    "ssn_bare": "us_ssn",
    "card": "credit_card",
    "phone": "phone",
    "it_fiscal_code": "it_fiscal_code",
    "uk_nino": "uk_nino",
    "es_nie": "es_dni",
    "es_dni": "es_dni",
    "in_aadhaar": "in_aadhaar",
}


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _card(value: str, before: str = "") -> bool:
    """Luhn over every card length (12-19), with a known issuer prefix or a card word before it."""
    number = _digits(value)
    if not (12 <= len(number) <= 19 and luhn.is_valid(number)):
        return False
    if _CARD_CONTEXT.search(before):
        return True
    # 12-digit numbers are common as other ids: only Maestro's own 4-digit ranges go without the word.
    return bool((_MAESTRO_12 if len(number) == 12 else _CARD_PREFIX).match(number))


def _iban(value: str) -> bool:
    return bool(iban.is_valid(value))


def _itin(value: str) -> bool:
    return bool(itin.is_valid(_digits(value)))


def _ssn(value: str) -> bool:
    return bool(ssn.is_valid(_digits(value)))  # stdnum strips dashes but not spaces


def _ip(value: str) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    # Loopback and "any" addresses (127.0.0.1, 0.0.0.0, ::1) identify no one.
    return not (address.is_loopback or address.is_unspecified)


@dataclass(frozen=True, slots=True)
class Detection:
    """What a scan found, and how much of the text the NER model's time budget left unread."""

    findings: list[Finding]
    ner_unread_chars: int = 0


class PiiDetector:
    """Finds personal data of the configured kinds in a text; built once, thread-safe."""

    def __init__(
        self,
        entities: Iterable[PiiEntity],
        phone_regions: Iterable[str] = ("US",),
        ner_budget_s: float = 0.25,
        ner: NerChoice = "fast",
    ) -> None:
        self.entities = frozenset(entities)
        self.phones = PhoneRules(phone_regions)
        self.ner_budget_s = ner_budget_s
        self.ner = ner
        # Loaded (and spaCy's files checked) at start, so a missing model is a start error, not a miss.
        ner_kinds = self.entities & NER_KINDS
        self.names: NameRecognizer | FastNameRecognizer | None = None
        if ner_kinds and ner == "spacy":
            self.names = NameRecognizer(ner_kinds)
        elif ner_kinds and ner == "fast":
            self.names = FastNameRecognizer(ner_kinds)
        # With ner: off, the legal forms and cue words still find the names they are sure of.
        self.cues = bool(ner_kinds)
        self._checks: dict[str, Callable[[str], bool]] = {
            "email": lambda v: True,
            "iban": _iban,
            "ipv6": _ip,
            "ipv4": _ip,
            "ssn": _ssn,
            "card": lambda v: True,  # confirmed in _confirm, where the text before it is known
            "it_fiscal_code": lambda v: bool(codicefiscale.is_valid(v.upper())),
            "uk_nino": lambda v: True,  # the pattern carries the prefix rules; there is no check digit
            "es_nie": lambda v: bool(nie.is_valid(v.upper())),
            "es_dni": lambda v: bool(dni.is_valid(v.upper())),
            "in_aadhaar": lambda v: bool(aadhaar.is_valid(v)),
        }

    def _phone(self, text: str, value: str, start: int) -> bool:
        if _DATE_LIKE.fullmatch(value):
            return False
        before = text[max(0, start - 60) : start]
        around = text[max(0, start - 80) : start + len(value) + 80]
        return self.phones.is_phone(value, before, around)

    def find(self, text: str) -> list[Finding]:
        """Every finding, in order, not overlapping."""
        return self.detect(text).findings

    def detect(self, text: str, names: bool = True, deadline_ns: int | None = None) -> Detection:
        """Every finding, in order, not overlapping, and what the NER budget left unread.

        ``names=False``: no person, location or organisation names (the NER model does not run).
        ``deadline_ns`` (``time.perf_counter_ns``): past it, raise ``ScanDeadline`` (checked every
        ``_DEADLINE_EVERY`` candidate places and between the recognisers) instead of reading on.
        """
        structured: list[Finding] = []
        windows = _identifier_windows(text)
        places = _start_places_in(text, windows) if sum(high - low for low, high in windows) >= _PLACES_FROM else None
        for index, (low, high) in enumerate(windows):
            for match in _matches(text, low, high, deadline_ns, starts=None if places is None else places[index]):
                finding = self._confirm(text, match)
                if finding is not None:
                    structured.append(finding)
        # An email written with hidden characters or a fullwidth '@' is read as a person reads it, and wins
        # over what the patterns found of it in the text as written ("roe@example.org" of "jane\u200b.roe@…").
        ranked = [_hidden_emails(text, deadline_ns), structured] if "email" in self.entities else [structured]
        _check(deadline_ns)
        if self.entities & {"date_of_birth", "age"}:
            ranked.append([f for f in find_marked_dates_and_ages(text) if f.kind in self.entities])
        if "street_address" in self.entities:
            # The town after an address is a location: a name kind, so only where names are looked for.
            allowed = self.entities if names else self.entities - NER_KINDS
            ranked.append([f for f in find_addresses(text) if f.kind in allowed])
        _check(deadline_ns)
        unread = 0
        if "organization" in self.entities and names:
            ranked.append(find_organisations(text))
        if self.cues and names:
            ranked.append([f for f in find_cued_names(text) if f.kind in self.entities])
        if self.names is not None and names:
            named = self._names(text)
            spacy = isinstance(self.names, NameRecognizer)
            corrected = (correct_kind(text, f, self.entities, extend=spacy) for f in named.findings)
            ranked.append([f for f in corrected if f is not None])
            unread = named.unread_chars
        return Detection(resolve_overlaps(ranked), unread)

    def _names(self, text: str) -> NerResult:
        if isinstance(self.names, NameRecognizer):
            return self.names.find(text, self.ner_budget_s)
        assert self.names is not None
        return NerResult(self.names.find(text), 0)

    def _confirm(self, text: str, match: re.Match[str]) -> Finding | None:
        group = match.lastgroup
        assert group is not None
        value = match.group(group)
        kind: PiiEntity
        if group == "ssn_bare":
            window = text[max(0, match.start() - 40) : match.start()]
            if _SSN_CONTEXT.search(window) and _ssn(value):
                kind = "us_ssn"
            elif _SSN_CONTEXT.search(window) and _itin(value):
                kind = "us_itin"
            elif "phone" in self.entities and self._phone(text, value, match.start()):
                kind = "phone"
            else:
                return None
        else:
            kind = _KIND[group]  # type: ignore[assignment]
            before = text[max(0, match.start() - 40) : match.start()]
            if group == "card" and not _card(value, before):
                # A long digit run that is no card may still be a phone number.
                if "phone" not in self.entities or not self._phone(text, value, match.start()):
                    return None
                kind = "phone"
            elif group == "phone":
                if not self._phone(text, value, match.start()):
                    return None
            elif group == "ssn" and not _ssn(value):
                if not _itin(value):  # 9XX-7X-XXXX: a taxpayer number, not an SSN
                    return None
                kind = "us_itin"
            elif group == "in_aadhaar" and not aadhaar.is_valid(value):
                if not _card(value, before):  # 4-4-4 digits that fail Verhoeff may be a Maestro card
                    return None
                kind = "credit_card"
            elif group == "ipv4" and _VERSION_CONTEXT.search(before):
                return None  # "version 1.2.3.4" is a version
            elif not self._checks[group](value):
                return None
        if kind not in self.entities:
            return None
        return Finding(kind, match.start(), match.end(), value)


def _hidden_emails(text: str, deadline_ns: int | None) -> list[Finding]:
    """Emails that only the text as read (``pii_unhide``) shows whole: each with its span in ``text``."""
    unhidden = unhide(text)
    if unhidden is None:
        return []
    read, kept = unhidden
    ats = [match.span() for match in _AT.finditer(read)]
    found: list[Finding] = []
    for low, high in merge_windows(ats, 64, 128, len(read)):
        for match in _matches(read, low, high, deadline_ns):
            if match.lastgroup != "email":
                continue
            start, end = original_span(kept, match.start(), match.end())
            if text[start:end] != match.group():  # shown whole as written: the patterns found it there
                found.append(Finding("email", start, end, text[start:end]))
    return found


# Where a match of _PATTERN can start: every alternative needs a non-word character (or nothing) before
# it and starts with a word character, ':', '+' or '('. Apart from an email, a word start counts only where
# what every alternative that can start there needs follows: two digits, at most one of ``[\s.-]`` between
# (IPv4, SSN, DNI, Aadhaar, card, bare SSN, phone), a few letters then two digits (IBAN, fiscal code, NINO,
# NIE), or hex digits, ':', hex digits, ':' (IPv6). '(' and '+' start only a phone ("(0", "+ 4"); ':' only an
# IPv6 address ("::", ":a:", never after a word character or ':'). An email starts at a word start in the run of
# its local part's characters just before an '@'. Zero-width, so no start hides another. (A lone digit, a "(" of
# code or a ':' after a word were each tried with every alternative there: ~1 us each, ~500 per 32 KB.)
_STARTS_NO_EMAIL = re.compile(
    r"\b(?=\d[\s.-]?\d|[A-Za-z]{1,6}[ -]?\d\d|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:)"
    r"|\((?=\d)|\+(?=\s?\d)|(?<![\w:]):(?=[0-9A-Fa-f]{0,4}:)"
)
_WORD_START = re.compile(r"\b(?=\w)")
_LOCAL_PART = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")


def _matches(
    text: str,
    low: int,
    high: int,
    deadline_ns: int | None = None,
    places: NDArray[np.intp] | None = None,
    starts: list[int] | None = None,
) -> Iterator[re.Match[str]]:
    """``_PATTERN.finditer(text, low, high)``, tried only where a match can start.

    ``finditer`` tries all 13 alternatives at every position (~0.35 us each); the same matches come
    from trying them only at the possible starts, skipping those inside the last match. An email's
    ``[A-Za-z0-9][A-Za-z0-9._%+-]*@`` starts in the run of those characters that ends at an '@': only the
    word starts there are tried for it (every word start of a window with an '@' was, ~2,900 a dense 32 KB).

    ``places``: ``pii_places.start_places(text)``, read in place of ``_STARTS_NO_EMAIL`` (the same matches: see there);
    ``starts``: those of the window already (``pii_places.start_places_in``).
    """
    if starts is not None:
        pass
    elif places is None:
        starts = [m.start() for m in _STARTS_NO_EMAIL.finditer(text, low, high)]
    else:
        starts = places[np.searchsorted(places, low) : np.searchsorted(places, high)].tolist()
    runs: list[tuple[int, int]] = []
    at = text.find("@", low, high)
    if at >= 0:
        extra = set(starts)
        while at >= 0:
            begin = at
            while begin > low and text[begin - 1] in _LOCAL_PART:
                begin -= 1
            if begin < at:
                extra.update(m.start() for m in _WORD_START.finditer(text, begin, at))
                runs.append((begin, at))
            at = text.find("@", at + 1, high)
        starts = sorted(extra)
    return _matches_at_starts(text, starts, low, high, runs, deadline_ns)


def _alternatives(pattern: str) -> dict[str, str]:
    """The top-level alternatives of ``pattern``, each ``(?P<name>…)``, by name (in order)."""
    out: dict[str, str] = {}
    depth, begin, at = 0, 0, 0
    while at < len(pattern):
        char = pattern[at]
        if char == "\\":
            at += 2
            continue
        if char == "[":
            at = pattern.index("]", at + 2) + 1
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if (char == "|" and depth == 0) or at == len(pattern) - 1:
            part = pattern[begin : at if char == "|" else at + 1]
            name = re.match(r"\(\?P<(\w+)>", part)
            assert name is not None and part.endswith(")"), part
            out[name.group(1)] = part
            begin = at + 1
        at += 1
    assert "|".join(out.values()) == pattern
    return out


# _PATTERN's alternatives that can match at a place, by the character there (the others cannot: each of them
# needs another first character), in _PATTERN's order: the same match as _PATTERN's there, for a fraction of
# the cost (``re`` tries the 13 alternatives one by one, ~1 us a place). A place that starts with any other
# character (a non-ASCII digit or letter) tries the whole pattern.
_BY_NAME = _alternatives(_PATTERN.pattern)
_FIRST: dict[str, re.Pattern[str]] = {}
# The same without the email alternative, where no email can start.
_OTHERS: dict[str, re.Pattern[str]] = {}
for _chars, _names in (
    ("0123456789", ("email", "ipv6", "ipv4", "ssn", "es_dni", "in_aadhaar", "card", "ssn_bare", "phone")),
    (
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        ("email", "iban", "ipv6", "it_fiscal_code", "uk_nino", "es_nie"),
    ),
    (":", ("ipv6",)),
    ("+(", ("phone",)),
):
    _compiled = re.compile("|".join(_BY_NAME[name] for name in _BY_NAME if name in _names))
    _FIRST.update(dict.fromkeys(_chars, _compiled))
    _without = re.compile("|".join(_BY_NAME[name] for name in _BY_NAME if name in _names and name != "email"))
    _OTHERS.update(dict.fromkeys(_chars, _without))
del _chars, _names, _compiled, _without
_ASCII_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _matches_at_starts(
    text: str,
    starts: list[int],
    low: int,
    high: int,
    runs: list[tuple[int, int]] | None = None,
    deadline_ns: int | None = None,
) -> Iterator[re.Match[str]]:
    """``matches_at(_PATTERN.match, text, starts, low, high)``, each place tried with the alternatives its
    first character allows (``_FIRST``); ``starts`` are word starts or one of ``:+(`` (``_matches``).

    ``runs``: (begin, at) of each '@' in the window, ``begin`` where the run of local-part characters that
    ends at it starts. The email alternative can match at a place only inside such a run (its ``[…]*``
    cannot pass another character, nor reach an '@' past the run): elsewhere the other alternatives are
    tried alone (``_OTHERS``). Inside, at a word start with an ASCII letter or digit, it fails only where
    the domain after the '@' fails, whatever the place: once it failed at one, the run's other places try
    the others alone. Tried at every place, the email's ``[…]*`` read to the end of the run each time:
    quadratic in a run of "1-2-3-…" (32 KB: ~0.6 s); now each run is read so once.

    ``deadline_ns``: checked every ``_DEADLINE_EVERY`` places tried (``_check``).
    """
    resume = low
    first = _FIRST.get
    others = _OTHERS.get
    runs = runs or []
    index, count = 0, len(runs)
    failed = -1  # the run whose domain failed
    tried = 0
    for at in starts:
        if at < resume:
            continue
        tried += 1
        if deadline_ns is not None and not tried % _DEADLINE_EVERY:
            _check(deadline_ns)
        char = text[at]
        while index < count and runs[index][1] <= at:
            index += 1
        if index < count and runs[index][0] <= at and index != failed:
            found = first(char, _PATTERN).match(text, at, high)
            if char in _ASCII_ALNUM and (found is None or found.lastgroup != "email"):
                failed = index
        else:
            found = others(char, _PATTERN).match(text, at, high)
        if found is not None:
            yield found
            resume = found.end()


# Places tried between two looks at the clock (~60 ns each): a place costs ~1-3 us, so the scan overruns
# its deadline by well under a millisecond.
_DEADLINE_EVERY = 64


def _check(deadline_ns: int | None) -> None:
    """Raise ``ScanDeadline`` once ``deadline_ns`` (``time.perf_counter_ns``) has passed."""
    if deadline_ns is not None and time.perf_counter_ns() > deadline_ns:
        raise ScanDeadline("pii scan past the request's time budget")


# Runs of anchor characters (``[\d:]+``) no more than 2 * _MERGE_GAP apart: their windows overlap or touch, so
# one cluster is one merged window (a dense text has thousands of digit runs: one Python step per cluster, not
# per run). Found by numpy (``digit_runs``, ``clusters``) past ``SHORT`` characters: ``re`` (_CLUSTER) read a
# 32 KB text for them in ~1.5-2 ms.
_CLUSTER = re.compile(rf"[\d:]+(?:[^\d:]{{1,{2 * _MERGE_GAP}}}[\d:]+)*")
_AT = re.compile("@")


def _windows(text: str) -> list[tuple[int, int]]:
    """Merged spans of ``text`` around the characters an identifier must contain.

    The union of ``_MERGE_GAP`` around each run of digits or ':' and of an email's reach around each '@'
    (64 before: an '@' window reaches back past the windows of digits in the same address, "bob88@x.org",
    or the pattern would start inside the address and miss it), spans that overlap or touch merged.
    """
    if len(text) < SHORT:  # one ``re`` pass costs less than numpy's fixed cost per call
        found = [m.span() for m in _CLUSTER.finditer(text)]
    else:
        found = clusters(*digit_runs(text, ":"), 2 * _MERGE_GAP)
    spans = [(max(0, start - _MERGE_GAP), end + _MERGE_GAP) for start, end in found]
    if "@" in text:
        spans += [(max(0, m.start() - 64), m.end() + 128) for m in _AT.finditer(text)]
        spans.sort()
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1]:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    size = len(text)
    return [(low, min(high, size)) for low, high in merged]


def _identifier_windows(text: str) -> list[tuple[int, int]]:
    """``_windows``, less those in which no identifier can be (``_may_match``; texts of ``SHORT`` or more)."""
    windows = _windows(text)
    return windows if len(text) < SHORT or not windows else _may_match(text, windows)


def replace_findings(text: str, findings: list[Finding], label: Callable[[Finding], str]) -> str:
    """``text`` with each finding replaced by ``label(finding)``."""
    out: list[str] = []
    last = 0
    for finding in findings:
        out.append(text[last : finding.start])
        out.append(label(finding))
        last = finding.end
    out.append(text[last:])
    return "".join(out)


_CACHED_TEXTS = 1024
_CACHED_FINDINGS = 256


class PiiScanner:
    """Detects PII; redacts it as ``<EMAIL>``, or — reversible, on input — as ``<EMAIL_1>`` kept in the vault."""

    name = "pii"

    def __init__(self, config: PiiScannerConfig) -> None:
        self.detector = PiiDetector(config.entities, config.phone_regions, config.ner_budget_ms / 1000, config.ner)
        self.reversible = config.reversible
        self.threshold = config.threshold
        self.names_on_output = config.names_on_output
        # spaCy reads ~10-30 ms per KB: with it, even a small input scan belongs off the event loop
        # (the guard stage reads this). The fast recogniser costs what the patterns cost.
        self.off_loop = isinstance(self.detector.names, NameRecognizer)
        # A chat re-sends its whole history every turn: what was found in a text read before costs a
        # digest. Findings only (placeholders go into each request's own vault); bounded in entries and,
        # since a dense text holds thousands of findings, in findings per entry (~40 MB at most).
        self._seen: TextCache[Detection] = TextCache(_CACHED_TEXTS)

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """Score 1 when anything is found; details count findings by kind (never the values).

        ``ner_unread_chars`` in the details: the NER model's time budget ran out that far before the
        end (the patterns still read it all).
        """
        names = context.direction == "input" or self.names_on_output
        key = TextCache.key(text, names)
        detection = self._seen.get(key)
        if detection is None:
            # Past the request's deadline this raises ScanDeadline: no answer, and nothing cached.
            detection = self.detector.detect(text, names=names, deadline_ns=context.deadline_ns)
            # A budget that ran out depends on the moment, not the text: such a detection is not kept.
            if not detection.ner_unread_chars and len(detection.findings) <= _CACHED_FINDINGS:
                self._seen.put(key, detection)
        findings = detection.findings
        extra: dict[str, int] = {"ner_unread_chars": detection.ner_unread_chars} if detection.ner_unread_chars else {}
        if not findings:
            return ScanResult(text, "pass", 0.0, extra) if extra else ScanResult.clean(text)
        counts: dict[str, int] = {}
        for finding in findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        vault = context.vault if self.reversible and context.direction == "input" else None
        if vault is not None:
            sanitized = replace_findings(text, findings, lambda f: vault.placeholder(f.kind, f.value))
        else:
            sanitized = replace_findings(text, findings, lambda f: f"<{f.kind.upper()}>")
        return ScanResult(sanitized, "fail", 1.0, {"found": counts, **extra})


_PLACEHOLDER = re.compile(r"<[A-Z_]+_\d+>")
_PARTIAL = re.compile(r"<[A-Z_]*(?:_\d*)?$")


def restore(text: str, vault: Vault) -> str:
    """Put the originals back where the model repeated a placeholder."""
    if not vault or "<" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: vault.originals.get(m.group(0), m.group(0)), text)


def split_partial_placeholder(text: str) -> tuple[str, str]:
    """(text safe to restore now, a tail that may be the start of a placeholder cut by the stream)."""
    at = text.rfind("<")
    if at < 0 or not _PARTIAL.match(text, at):
        return text, ""
    return text[:at], text[at:]
