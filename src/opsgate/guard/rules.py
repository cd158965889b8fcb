"""Simple rule scanners: banned terms and topics, and the size of the input."""

from __future__ import annotations

import re

from opsgate.domain.guard_config import BannedTermsScannerConfig, InputSizeScannerConfig
from opsgate.guard.base import ScanContext, ScanResult, verdict_for


def _words(terms: list[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching any of ``terms`` as whole words (longest first)."""
    cleaned = sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True)
    if not cleaned:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, term.split())) for term in cleaned)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.I)


class BannedTermsScanner:
    """A banned term anywhere, or two keywords of one banned topic; redaction masks the terms."""

    name = "banned_terms"

    def __init__(self, config: BannedTermsScannerConfig) -> None:
        self.terms = _words(config.terms)
        self.topics = {topic: pattern for topic, words in config.topics.items() if (pattern := _words(words))}
        self.threshold = config.threshold

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """Score 1 for a banned term; 0.25 per distinct keyword of a topic (two make a hit at threshold 0.5)."""
        score = 0.0
        details: dict[str, list[str]] = {}
        sanitized = text
        if self.terms is not None:
            hits = self.terms.findall(text)
            if hits:
                score = 1.0
                details["terms"] = sorted({h.lower() for h in hits})
                sanitized = self.terms.sub("<BANNED>", sanitized)
        for topic, pattern in self.topics.items():
            keywords = {h.lower() for h in pattern.findall(text)}
            if keywords:
                topic_score = min(1.0, 0.25 * len(keywords))
                score = max(score, topic_score)
                if topic_score >= self.threshold:
                    details.setdefault("topics", []).append(topic)
                    sanitized = pattern.sub("<BANNED>", sanitized)
        if score == 0.0:
            return ScanResult.clean(text)
        return ScanResult(sanitized, verdict_for(score, self.threshold), score, details)


class InputSizeScanner:
    """The input's length against ``max_chars`` (the engine hands it the whole input at once)."""

    name = "input_size"

    def __init__(self, config: InputSizeScannerConfig) -> None:
        self.max_chars = config.max_chars
        self.threshold = config.threshold

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """Score 1 over the limit, else the used share of it."""
        size = len(text)
        score = 1.0 if size > self.max_chars else size / self.max_chars
        verdict = verdict_for(1.0 if size > self.max_chars else 0.0, 1.0)
        return ScanResult(text, verdict, round(score, 4), {"chars": size, "max_chars": self.max_chars})
