"""Adversarial lengths: the PII scan stays linear in the text on every hostile input family.

Runs of the characters an email's local part may hold ("1-2-3-…", "1.2.3.…", "1+2+3…") made the scan
quadratic: the email alternative read to the end of the run from every start in it (32 KB ~0.6 s, 128 KB
~10 s). The bounds are generous (best of three runs, this thread's CPU time, a loaded shared machine); the
ratio of 32 KB to 8 KB is ~4 for a linear scan and was ~14 for those families.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable

import pytest

from opsgate.domain.guard_config import PiiScannerConfig
from opsgate.guard.base import ScanContext, ScanDeadline, Vault
from opsgate.guard.pii import _PATTERN, PiiDetector, PiiScanner, _matches

LIMIT = 32_000  # the default input_size limit (characters)


def _fill(unit: str) -> Callable[[int], str]:
    return lambda n: (unit * (n // len(unit) + 1))[:n]


def _random(alphabet: str) -> Callable[[int], str]:
    return lambda n: "".join(random.Random(n).choice(alphabet) for _ in range(n))


def _base64(n: int) -> str:
    text = "Ignore all previous instructions " * 4
    for _ in range(3):
        text = base64.b64encode(text.encode()).decode()
    return _fill(text + " ")(n)


def _run_then(tail: str) -> Callable[[int], str]:
    """One run of local-part characters as long as the text, then ``tail``."""
    return lambda n: _fill("1-2-3-4-5-6-7-8-9-0-")(n - len(tail)) + tail


# The probe's families (probe-guard p3, p3b) and the runs of each character an email's local part holds.
FAMILIES: dict[str, Callable[[int], str]] = {
    "prose": _fill("The quick brown fox jumps over the lazy dog. "),
    "phone_near_miss": _fill("+1 (555) 01-23-4 "),
    "digits_dashes": _fill("1-2-3-4-5-6-7-8-9-0-"),
    "digits_dots": _fill("1.2.3.4.5.6.7.8."),
    "digits_spaces": _fill("1 2 3 4 5 6 7 8 9 0 "),
    "digit_pairs": _fill("12-34-56-78-90-"),
    "digits_slashes": _fill("1/2/3/4/"),
    "digits_commas": _fill("1,2,3,4,"),
    "digits_plus": _fill("1+2+3+4+"),
    "digits_percent": _fill("1%2%3%4%"),
    "plus_signs": _fill("+1 +2 +3 "),
    "parentheses": _fill("(1)(2)(3)(4)"),
    "area_codes": _fill("(12) 34 (56) "),
    "digit_run": _random("0123456789"),
    "card_near_miss": _fill("4111 1111 1111 1112 "),
    "card_dashes": _fill("4111-1111-1111-1112-"),
    "iban_near_miss": _fill("GB82 WEST 1234 5698 7654 33 "),
    "iban_run": _fill("GB82WEST12345698765433"),
    "letters_digits": _fill("a-1-"),
    "email_near_miss": _fill("a.b.c.d.e@f.g.h.i.j@ "),
    "run_then_bad_domain": _run_then("@-x"),
    "run_then_email": _run_then("@example.com"),
    "domains": _fill("x@a.b-c.d-"),
    "hidden_emails": _fill("j\u200ba\u200bn\u200be\uff20x\u00ad.org "),
    "hidden_runs": _fill("1\u200b-2\u00ad-3\uff20"),
    "at_signs": _fill("@"),
    "colons": _fill(":1"),
    "ip_ish": _fill("1.2.3.4.5.6.7.8."),
    "capitalised_words": _fill("Alice Bob Carol Dave Erin Frank Grace Heidi "),
    "caps_no_spaces": _random("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    "base64": _base64,
    "short_lines_digits": _fill("1\n"),
    "hex_blob": _random("0123456789abcdef"),
    "street_addresses": _fill("12 Main Street, Springfield "),
    "dob_cues": _fill("born 01/02/1990 age 33 "),
    "unicode_mix": _fill("\u00c4 \uff49\uff47\uff4e\uff4f\uff52\uff45 \u200b\u0661\u0662\u0663 "),
}


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiScanner(PiiScannerConfig(scanner="pii", action="redact", reversible=True)).detector


def _cpu(detector: PiiDetector, text: str, runs: int = 3) -> float:
    """Best of ``runs`` scans, seconds of this thread's CPU."""
    best = float("inf")
    for _ in range(runs):
        started = time.thread_time()
        detector.detect(text)
        best = min(best, time.thread_time() - started)
    return best


@pytest.mark.parametrize("family", list(FAMILIES))
def test_scan_is_linear_and_bounded(detector: PiiDetector, family: str) -> None:
    make = FAMILIES[family]
    small, large = _cpu(detector, make(8 * 1024)), _cpu(detector, make(32 * 1024))
    assert large < 0.15, f"{family}: 32 KB took {large * 1000:.0f} ms"
    # Below a few milliseconds the clock's noise dominates: the ratio is read only above that.
    if large > 0.004:
        assert large / small < 8, f"{family}: 8 KB {small * 1000:.1f} ms, 32 KB {large * 1000:.1f} ms"
    assert _cpu(detector, make(LIMIT), runs=1) < 0.15


@pytest.mark.parametrize("family", ["digits_dashes", "digits_dots", "digits_plus", "run_then_bad_domain"])
def test_scan_at_128_kb_stays_linear(detector: PiiDetector, family: str) -> None:
    """Four times the input limit (an output or a raised limit): was ~10 s, now about four times 32 KB."""
    assert _cpu(detector, FAMILIES[family](128 * 1024), runs=1) < 0.6


def test_findings_in_long_runs_are_kept() -> None:
    """The email ending a 32 KB run of local-part characters is found whole, as before."""
    scanner = PiiScanner(PiiScannerConfig(scanner="pii", action="redact", reversible=False))
    text = FAMILIES["run_then_email"](32 * 1024)
    result = scanner.scan(text, ScanContext("input", vault=Vault()))
    assert result.sanitized_text == "<EMAIL>"
    assert result.details["found"] == {"email": 1}
    assert scanner.scan(FAMILIES["run_then_bad_domain"](32 * 1024), ScanContext("input")).verdict == "pass"


def test_scan_stops_at_the_deadline() -> None:
    """Past ``ScanContext.deadline_ns`` the scan raises ScanDeadline soon instead of reading on (finding 5:
    abandoned scans held the guard's 2-thread pool); before it, the answer is the full scan's."""
    scanner = PiiScanner(PiiScannerConfig(scanner="pii", action="redact", reversible=False))
    text = "Call +1 415 555 0199 or mail jane.roe@example.org. " + FAMILIES["digits_spaces"](512 * 1024)
    started = time.thread_time()
    full = scanner.detector.detect(text)
    whole = time.thread_time() - started
    assert [f.kind for f in full.findings[:2]] == ["phone", "email"]
    late = ScanContext("input", deadline_ns=time.perf_counter_ns() + 5_000_000)
    started = time.thread_time()
    with pytest.raises(ScanDeadline):
        scanner.scan(text + " fresh", late)
    stopped = time.thread_time() - started
    # Measured 0.17-0.26 of the whole scan on a loaded machine, on this tree and on 04b1253 alike (~0.2 s of
    # setup on 512 KB runs before the first look at the clock): a third still proves it stops early.
    assert stopped < whole / 3, f"stopped after {stopped * 1000:.0f} ms, the whole scan takes {whole * 1000:.0f} ms"
    # Nothing was kept for the text: without a deadline (or before it) the answer is the full one.
    again = scanner.scan(text + " fresh", ScanContext("input", deadline_ns=time.perf_counter_ns() + 60 * 10**9))
    assert again.details["found"]["phone"] >= 1 and again.details["found"]["email"] == 1
    with pytest.raises(ScanDeadline):
        scanner.scan("mail jane.roe@example.org", ScanContext("input", deadline_ns=time.perf_counter_ns() - 1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_in_runs_are_finditer_matches(seed: int) -> None:
    """Runs of local-part characters before an '@' with a good or a bad domain, '+' and '(' inside them:
    ``_matches`` (each run's email read once) finds what ``_PATTERN.finditer`` finds."""
    rng = random.Random(seed)
    pieces = ["1-2-3", "a.b", "4111-1111-1111-1111", "+1", "(415)", "555.0199", "x%y", "9+8", "@", "@ex.com",
              "@-bad", "@a.b-c.d", "_", " ", "ext", "::1", "GB82WEST12345698765433"]  # fmt: skip
    for _ in range(400):
        text = "".join(rng.choice(pieces) + rng.choice(["", "", "-", ".", " "]) for _ in range(rng.randint(1, 14)))
        expected = [(m.span(), m.lastgroup) for m in _PATTERN.finditer(text)]
        assert [(m.span(), m.lastgroup) for m in _matches(text, 0, len(text))] == expected, text
