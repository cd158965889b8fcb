"""What every PII recogniser returns: a kind and a span of the scanned text."""

from __future__ import annotations

from dataclasses import dataclass

from opsgate.domain.guard_config import PiiEntity


@dataclass(frozen=True, slots=True)
class Finding:
    """One confirmed piece of personal data: its kind and where it is."""

    kind: PiiEntity
    start: int
    end: int
    value: str


def resolve_overlaps(ranked: list[list[Finding]]) -> list[Finding]:
    """Findings of several recognisers, in text order, none overlapping.

    ``ranked`` lists each recogniser's findings, most trusted first: a finding that overlaps one
    already taken is dropped (a validated card number beats the model's guess of a name there).
    """
    taken: list[Finding] = []
    for findings in ranked:
        for finding in findings:
            if not any(finding.start < other.end and other.start < finding.end for other in taken):
                taken.append(finding)
    return sorted(taken, key=lambda f: f.start)
