"""The secrets scanner's cache of texts read before, and the digest the scanners' caches share."""

from __future__ import annotations

import time

import pytest

from opsgate.domain.guard_config import SecretsScannerConfig
from opsgate.guard import base
from opsgate.guard.base import ScanContext, ScanDeadline, TextCache
from opsgate.guard.secrets import SecretsScanner

_KEY = "AKIA" + "QWERTYUIOPASDFGH"
_TEXT = f"Deploy notes. The old key {_KEY} was rotated; password: hunter2! stays out of the logs. " * 60


def test_a_text_read_before_is_not_searched_again(monkeypatch: pytest.MonkeyPatch) -> None:
    scanner = SecretsScanner(SecretsScannerConfig(scanner="secrets"))
    first = scanner.scan(_TEXT, ScanContext("input"))
    calls: list[str] = []
    original = scanner.spans
    monkeypatch.setattr(scanner, "spans", lambda text, deadline_ns=None: calls.append(text) or original(text))
    again = scanner.scan("".join(list(_TEXT)), ScanContext("input"))  # an equal text, another object
    assert calls == []
    assert (again.sanitized_text, again.verdict, again.score, again.details) == (
        first.sanitized_text,
        first.verdict,
        first.score,
        first.details,
    )
    assert first.verdict == "fail" and _KEY not in first.sanitized_text
    scanner.scan(_TEXT + " more", ScanContext("input"))
    assert calls == [_TEXT + " more"]


def test_a_scan_past_its_deadline_is_not_kept() -> None:
    scanner = SecretsScanner(SecretsScannerConfig(scanner="secrets"))
    context = ScanContext("input")
    context.deadline_ns = time.perf_counter_ns() - 1
    text = (_TEXT + " ") * 40
    with pytest.raises(ScanDeadline):
        scanner.scan(text, context)
    assert scanner.scan(text, ScanContext("input")).verdict == "fail"


def test_the_shared_digest_is_each_texts_own() -> None:
    text = "h\u00e9llo \ud800 world" * 100
    expected = base.hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
    expected.update(repr((True, 3)).encode())
    assert TextCache.key(text, True, 3) == expected.digest()
    assert TextCache.key(text, True, 3) == expected.digest()  # from the kept state
    assert TextCache.key(text, False, 3) != TextCache.key(text, True, 3)
    other = text[:-1] + "x"
    assert TextCache.key(other, True, 3) != TextCache.key(text, True, 3)
    assert TextCache.key(text, True, 3) == expected.digest()
