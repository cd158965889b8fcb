"""PII detection: each identifier on positives and look-alikes, the labelled splits, and placeholders."""

from __future__ import annotations

import pytest

from opsgate.domain.guard_config import PII_ENTITIES, PiiScannerConfig
from opsgate.guard.base import ScanContext, Vault
from opsgate.guard.pii import PiiDetector, PiiScanner, restore, split_partial_placeholder
from tests.guard.datasets import Rate, pii_rows

DETECTOR = PiiDetector(PII_ENTITIES, ["US", "GB", "DE", "FR"])


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("mail me at john.doe@example.com today", "email", "john.doe@example.com"),
        ("call +1 415-555-2671 now", "phone", "+1 415-555-2671"),
        ("office: (212) 555-0187", "phone", "(212) 555-0187"),
        ("ring 020 7946 0958 after six", "phone", "020 7946 0958"),
        ("card 4111 1111 1111 1111 expired", "credit_card", "4111 1111 1111 1111"),
        ("amex 378282246310005 ok", "credit_card", "378282246310005"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "iban", "DE89 3704 0044 0532 0130 00"),
        ("to GB82WEST12345698765432 thanks", "iban", "GB82WEST12345698765432"),
        ("my ssn is 536-22-1234.", "us_ssn", "536-22-1234"),
        ("SSN 536221234 on file", "us_ssn", "536221234"),
        ("host 192.168.1.20 is down", "ip_address", "192.168.1.20"),
        ("v6 2001:db8::8a2e:370:7334 too", "ip_address", "2001:db8::8a2e:370:7334"),
        ("ITIN 912-70-1234 on the W-7", "us_itin", "912-70-1234"),
        ("NI number AB 12 34 56 C", "uk_nino", "AB 12 34 56 C"),
        ("DNI 54362315K, por favor", "es_dni", "54362315K"),
        ("NIE X2482300W", "es_dni", "X2482300W"),
        ("codice fiscale RCCMNL83S18D969H", "it_fiscal_code", "RCCMNL83S18D969H"),
        ("Aadhaar 2341 2341 2346 linked", "in_aadhaar", "2341 2341 2346"),
    ],
)
def test_identifiers_are_found(text: str, kind: str, value: str) -> None:
    assert [(f.kind, f.value) for f in DETECTOR.find(text)] == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 (Luhn fails)",
        "IBAN DE88 3704 0044 0532 0130 00 (checksum fails)",
        "ssn 000-12-3456 and 666-12-3456 and 912-12-3456",
        "order 1234-5678-9012-3456 shipped",
        "shipped on 2024-03-15 at 10:30:45",
        "tracking 1420676764 in Memphis",
        "version 1.2.3 and 10.4.1.7.2",
        "the year 2023 and 12345 items",
        "user@localhost is not an address we match",
        "ITIN 912-40-1234 has no valid group",
        "NINO QQ 12 34 56 C is HMRC's example prefix",
        "DNI 54362315Z has the wrong letter",
        "codice RCCMNL83S18D969A has the wrong check letter",
        "batch 2341 2341 2341 fails Verhoeff",
        "serve on 127.0.0.1:8080 or 0.0.0.0, or ::1",
        "upgrade to version 2.10.3.1 first",
    ],
)
def test_look_alikes_are_not(text: str) -> None:
    assert DETECTOR.find(text) == []


def test_entities_can_be_limited() -> None:
    only_email = PiiDetector(["email"])
    assert [f.kind for f in only_email.find("a@b.example.org or 4111 1111 1111 1111")] == ["email"]


@pytest.mark.parametrize("split", ["dev", "test", "holdout"])
def test_recall_and_precision_on_structured_identifiers(split: str) -> None:
    found = expected = correct = 0
    for row in pii_rows(split):
        want = {(e["kind"], e["value"]) for e in row["entities"]}  # type: ignore[attr-defined, index]
        got = {(f.kind, f.value) for f in DETECTOR.find(str(row["text"]))}
        found, expected, correct = found + len(got), expected + len(want), correct + len(want & got)
    recall, precision = Rate(correct, expected), Rate(correct, found)
    assert recall.value >= 0.95, f"recall {recall}"
    assert precision.value >= 0.90, f"precision {precision}"


def test_reversible_redaction_uses_stable_placeholders_and_restores() -> None:
    scanner = PiiScanner(PiiScannerConfig(scanner="pii", reversible=True))
    vault = Vault()
    context = ScanContext("input", vault=vault)
    first = scanner.scan("Mail a@example.com and b@example.com", context)
    second = scanner.scan("Again: a@example.com", context)
    assert first.sanitized_text == "Mail <EMAIL_1> and <EMAIL_2>"
    assert second.sanitized_text == "Again: <EMAIL_1>"  # the same value keeps its placeholder
    assert first.details == {"found": {"email": 2}} and first.verdict == "fail"
    assert restore("to <EMAIL_2>, cc <EMAIL_1>, not <EMAIL_9>", vault) == (
        "to b@example.com, cc a@example.com, not <EMAIL_9>"
    )


def test_output_redaction_is_never_reversible() -> None:
    scanner = PiiScanner(PiiScannerConfig(scanner="pii", reversible=True))
    result = scanner.scan("call 415-555-2671", ScanContext("output", vault=Vault()))
    assert result.sanitized_text == "call <PHONE>"


@pytest.mark.parametrize(
    ("text", "now", "later"),
    [("hello <EMA", "hello ", "<EMA"), ("x <EMAIL_1", "x ", "<EMAIL_1"), ("a < b", "a < b", ""), ("done", "done", "")],
)
def test_a_placeholder_cut_by_the_stream_is_held_back(text: str, now: str, later: str) -> None:
    assert split_partial_placeholder(text) == (now, later)
