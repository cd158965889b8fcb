"""PII: structured identifiers found by one compiled pattern, then confirmed by a validator.

Kinds: email, phone, credit card, IBAN, IP address, and national ids (US SSN and ITIN, UK NINO,
Spanish DNI/NIE, Italian codice fiscale, Indian Aadhaar).

A pattern alone over-matches (any 16 digits look like a card), so every candidate is checked the way
the identifier itself is: cards by Luhn and issuer prefix, IBANs by country length and mod-97
(``python-stdnum``), US SSNs by stdnum's area/group/serial rules, phone numbers by Google's
``phonenumbers`` metadata, IP addresses by ``ipaddress``. Names and street addresses are not
detected: the offline methods (Presidio) need a spaCy model we cannot ship.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn
from stdnum.es import dni, nie
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.us import itin, ssn

from opsgate.domain.guard_config import PiiEntity, PiiScannerConfig
from opsgate.guard.base import ScanContext, ScanResult, Vault

_PATTERN = re.compile(
    r"(?P<email>\b[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b)"
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
    r"|(?P<card>(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-]))"
    r"|(?P<ssn_bare>(?<![\w-])\d{9}(?![\w-]))"
    r"|(?P<phone>(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,5}(?!\w))"
)
# Where an identifier can be: digits, '@' or ':' — the full pattern runs only in windows around them,
# because scanning every position of a long prose text with it costs ~0.4 ms per KB.
_ANCHOR = re.compile(r"[\d:]+|@")
_MERGE_GAP = 8
_VERSION_CONTEXT = re.compile(r"(?:version|release|build|\bv)\s*$", re.I)
_SSN_CONTEXT = re.compile(r"(ssn|social security|social-security|tax id|taxpayer)", re.I)
_PHONE_CONTEXT = re.compile(r"(phone|call|tel\b|mobile|cell|fax|whatsapp|sms|text me|reach me|dial)", re.I)
# North American formats: (415) 555-2671, 415-555-2671, 415.555.2671, 415 555 2671.
_NATIONAL = re.compile(r"\(\d{3}\)\s?\d{3}[\s.-]\d{4}|\d{3}([.-]|\s)\d{3}\1\d{4}")
# Issuer prefixes of the major card networks; Luhn alone passes one random number in ten.
_CARD_PREFIX = re.compile(r"^(4|5[1-5]|2(2[2-9]|[3-6]\d|7[01]|720)|3[47]|3[068]|6011|65|64[4-9]|35|62)")
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


@dataclass(frozen=True, slots=True)
class Finding:
    """One confirmed identifier: its kind and where it is."""

    kind: PiiEntity
    start: int
    end: int
    value: str


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _card(value: str) -> bool:
    number = _digits(value)
    return 13 <= len(number) <= 19 and bool(_CARD_PREFIX.match(number)) and luhn.is_valid(number)


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


class PiiDetector:
    """Finds validated identifiers of the configured kinds in a text."""

    def __init__(self, entities: Iterable[PiiEntity], phone_regions: Iterable[str] = ("US",)) -> None:
        self.entities = frozenset(entities)
        self.regions = tuple(phone_regions)
        self._checks: dict[str, Callable[[str], bool]] = {
            "email": lambda v: True,
            "iban": _iban,
            "ipv6": _ip,
            "ipv4": _ip,
            "ssn": _ssn,
            "card": _card,
            "it_fiscal_code": lambda v: bool(codicefiscale.is_valid(v.upper())),
            "uk_nino": lambda v: True,  # the pattern carries the prefix rules; there is no check digit
            "es_nie": lambda v: bool(nie.is_valid(v.upper())),
            "es_dni": lambda v: bool(dni.is_valid(v.upper())),
            "in_aadhaar": lambda v: bool(aadhaar.is_valid(v)),
        }

    def _phone(self, value: str, before: str = "") -> bool:
        """A valid number in international form, in a national format, or written bare after "call" etc.

        Validity alone is not enough: most 10-digit ids and many dates are valid numbers somewhere.
        """
        digits = _digits(value)
        if not 7 <= len(digits) <= 15:
            return False
        international = value.startswith("+")
        if not international and not (
            _NATIONAL.fullmatch(value)
            or (value.startswith("0") and len(digits) >= 9)
            or (len(digits) <= 12 and _PHONE_CONTEXT.search(before))
        ):
            return False
        for region in (None,) if international else self.regions:
            try:
                number = phonenumbers.parse(value, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return True
        return False

    def find(self, text: str) -> list[Finding]:
        """Every confirmed identifier, in order, not overlapping."""
        found: list[Finding] = []
        for low, high in _windows(text):
            for match in _PATTERN.finditer(text, low, high):
                finding = self._confirm(text, match)
                if finding is not None:
                    found.append(finding)
        return found

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
            elif "phone" in self.entities and self._phone(value, window):
                kind = "phone"
            else:
                return None
        else:
            kind = _KIND[group]  # type: ignore[assignment]
            before = text[max(0, match.start() - 40) : match.start()]
            if group == "card" and not _card(value):
                # A long digit run that is no card may still be a phone number.
                if "phone" not in self.entities or not self._phone(value, before):
                    return None
                kind = "phone"
            elif group == "phone":
                if not self._phone(value, before):
                    return None
            elif group == "ssn" and not _ssn(value):
                if not _itin(value):  # 9XX-7X-XXXX: a taxpayer number, not an SSN
                    return None
                kind = "us_itin"
            elif group == "ipv4" and _VERSION_CONTEXT.search(before):
                return None  # "version 1.2.3.4" is a version
            elif not self._checks[group](value):
                return None
        if kind not in self.entities:
            return None
        return Finding(kind, match.start(), match.end(), value)


def _windows(text: str) -> list[tuple[int, int]]:
    """Merged spans of ``text`` around the characters an identifier must contain."""
    spans: list[tuple[int, int]] = []
    for anchor in _ANCHOR.finditer(text):
        if anchor.group() == "@":
            low, high = anchor.start() - 64, anchor.end() + 128  # an email's local part and domain
        else:
            low, high = anchor.start() - _MERGE_GAP, anchor.end() + _MERGE_GAP
        low = max(0, low)
        if spans and low <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], high))
        else:
            spans.append((low, high))
    return [(low, min(high, len(text))) for low, high in spans]


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


class PiiScanner:
    """Detects PII; redacts it as ``<EMAIL>``, or — reversible, on input — as ``<EMAIL_1>`` kept in the vault."""

    name = "pii"

    def __init__(self, config: PiiScannerConfig) -> None:
        self.detector = PiiDetector(config.entities, config.phone_regions)
        self.reversible = config.reversible
        self.threshold = config.threshold

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """Score 1 when any identifier is found; details count them by kind (never the values)."""
        findings = self.detector.find(text)
        if not findings:
            return ScanResult.clean(text)
        counts: dict[str, int] = {}
        for finding in findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        vault = context.vault if self.reversible and context.direction == "input" else None
        if vault is not None:
            sanitized = replace_findings(text, findings, lambda f: vault.placeholder(f.kind, f.value))
        else:
            sanitized = replace_findings(text, findings, lambda f: f"<{f.kind.upper()}>")
        return ScanResult(sanitized, "fail", 1.0, {"found": counts})


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
