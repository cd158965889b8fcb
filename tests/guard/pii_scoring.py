"""Span scoring of the PII recognisers on the Faker sets, per kind, with Wilson intervals (scipy).

A labelled entity is recalled when findings of its kind cover at least half of its characters; a
finding is correct when labelled entities of its kind cover at least half of its characters. Half,
not all: "Mrs Claire Payne" found as "Claire Payne", or an address found without its town, still
hides the person; a finding of the wrong kind counts as a miss and as a false alarm.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from scipy.stats import binomtest

from opsgate.guard.pii import PiiDetector
from opsgate.guard.pii_base import Finding
from tests.guard.datasets import DATA

STRUCTURED = ("email", "phone", "credit_card")
NAMED = ("person", "street_address", "location", "organization")
MARKED = ("date_of_birth", "age")


def faker_rows(split: str) -> list[dict[str, object]]:
    """``{"text", "locale", "entities": [{"kind", "start", "end", "value"}]}`` rows of a Faker split.

    ``dev``, ``holdout`` (``make_pii_faker_sets.py``) or ``blind`` (``pii_make_blind_holdout.py``: never tuned on).
    """
    name = "pii_blind_holdout.jsonl" if split == "blind" else f"pii_faker_{split}.jsonl"
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@dataclass
class Tally:
    """Counts for one kind: labelled entities recalled, findings correct."""

    recalled: int = 0
    labelled: int = 0
    correct: int = 0
    found: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        """Fold another tally into this one."""
        self.recalled += other.recalled
        self.labelled += other.labelled
        self.correct += other.correct
        self.found += other.found


def interval(hits: int, total: int) -> tuple[float, float]:
    """The 95% Wilson interval of ``hits`` of ``total``."""
    if total == 0:
        return 0.0, 1.0
    ci = binomtest(hits, total).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def rate(hits: int, total: int) -> str:
    """``97.0% (95% CI 94.1-98.5%, 291/300)``."""
    low, high = interval(hits, total)
    value = hits / total if total else 0.0
    return f"{value:.1%} (CI {low:.1%}-{high:.1%}, {hits}/{total})"


def _covered(start: int, end: int, spans: Iterable[tuple[int, int]]) -> float:
    covered = sum(max(0, min(end, high) - max(start, low)) for low, high in spans)
    return covered / max(1, end - start)


def score(detector: PiiDetector, rows: list[dict[str, object]]) -> dict[str, Tally]:
    """Per-kind tallies of ``detector`` on ``rows``."""
    tallies: dict[str, Tally] = {}
    for row in rows:
        text = str(row["text"])
        gold: list[dict[str, object]] = row["entities"]  # type: ignore[assignment]
        found: list[Finding] = detector.find(text)
        for entity in gold:
            kind, start, end = str(entity["kind"]), int(entity["start"]), int(entity["end"])  # type: ignore[call-overload]
            tally = tallies.setdefault(kind, Tally())
            tally.labelled += 1
            spans = [(f.start, f.end) for f in found if f.kind == kind]
            if _covered(start, end, spans) >= 0.5:
                tally.recalled += 1
            else:
                tally.misses.append(f"{entity['value']!r} in {text!r}")
        for finding in found:
            tally = tallies.setdefault(finding.kind, Tally())
            tally.found += 1
            spans = [(int(e["start"]), int(e["end"])) for e in gold if e["kind"] == finding.kind]  # type: ignore[call-overload]
            if _covered(finding.start, finding.end, spans) >= 0.5:
                tally.correct += 1
            else:
                tally.false_alarms.append(f"{finding.value!r} in {text!r}")
    return tallies


def group(tallies: dict[str, Tally], kinds: Iterable[str]) -> Tally:
    """The tallies of ``kinds`` added up."""
    total = Tally()
    for kind in kinds:
        total.add(tallies.get(kind, Tally()))
    return total
