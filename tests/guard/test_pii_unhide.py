"""Emails hidden by invisible characters or fullwidth forms are found and their original span redacted
(probe-guard finding 8: zero-width spaces, a fullwidth '@' and soft hyphens passed unredacted)."""

from __future__ import annotations

import pytest

from opsgate.domain.guard_config import PiiScannerConfig
from opsgate.guard.base import ScanContext, Vault
from opsgate.guard.pii import PiiDetector, PiiScanner, restore
from opsgate.guard.pii_unhide import original_span, unhide

HIDDEN = {
    "zero_width": "\u200b".join("jane.roe@example.org"),
    "fullwidth_at": "jane.roe\uff20example.org",
    "soft_hyphens": "jane.\u00adroe@exa\u00admple.org",
    "fullwidth_letters": "".join(chr(ord(char) + 0xFEE0) for char in "jane@example.org"),
    "joiner_inside": "jane\u2060.roe@example.org",
    "small_at": "jane.roe\ufe6bexample.org",
}


@pytest.mark.parametrize("form", list(HIDDEN))
def test_hidden_email_is_redacted_whole_and_restored_as_written(form: str) -> None:
    email = HIDDEN[form]
    scanner = PiiScanner(PiiScannerConfig(scanner="pii", action="redact", reversible=True))
    vault = Vault()
    result = scanner.scan(f"mail me at {email} today", ScanContext("input", vault=vault))
    assert result.sanitized_text == "mail me at <EMAIL_1> today"
    assert vault.originals == {"<EMAIL_1>": email}
    assert restore("write to <EMAIL_1>", vault) == f"write to {email}"


def test_hidden_characters_elsewhere_change_nothing() -> None:
    """An emoji's joiner or a zero-width space away from the identifiers: the findings of the text without it."""
    detector = PiiDetector(["email", "phone", "credit_card"])
    plain = "Card 4111 1111 1111 1111, mail bob@example.org or call +1 415 555 0199."
    for extra in ("\U0001f468\u200d\U0001f469 ", "\u200b "):
        found = detector.find(extra + plain)
        assert [(f.kind, f.start - len(extra), f.end - len(extra), f.value) for f in found] == [
            (f.kind, f.start, f.end, f.value) for f in detector.find(plain)
        ]


def test_unhide_maps_back_to_the_original() -> None:
    text = "a\u200bb\uff20c\u00add"
    unhidden = unhide(text)
    assert unhidden is not None
    read, kept = unhidden
    assert read == "ab@cd"
    assert original_span(kept, 0, 5) == (0, len(text))
    assert original_span(kept, 2, 3) == (3, 4)
    assert unhide("plain ascii") is None and unhide("Müller") is None
