"""The labelled guard sets under tests/data/guard, and the measures the tests and the benchmark report."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

# The benign prose sets: one copy, shared with the fast name recogniser's training (which must skip
# exactly the paragraphs the benchmark counts names in).
from opsgate.guard.training.ner_corpus import package_paragraphs as package_paragraphs
from opsgate.guard.training.ner_corpus import stdlib_paragraphs as stdlib_paragraphs

DATA = Path(__file__).parent.parent / "data" / "guard"


def prompts(name: str) -> list[str]:
    """One prompt a line (``\\n`` stands for a newline); ``#`` lines are comments."""
    lines = (DATA / name).read_text().splitlines()
    return [line.replace("\\n", "\n") for line in lines if line.strip() and not line.startswith("#")]


def pii_rows(split: str) -> list[dict[str, object]]:
    """``{"text", "entities": [{"kind", "value"}]}`` rows of a PII split."""
    return [json.loads(line) for line in (DATA / f"pii_{split}.jsonl").read_text().splitlines()]


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    """k of n, with its interval."""

    hits: int
    total: int

    @property
    def value(self) -> float:
        return self.hits / self.total if self.total else 0.0

    def __str__(self) -> str:
        low, high = wilson(self.hits, self.total)
        return f"{self.value:.1%} ({self.hits}/{self.total}, 95% CI {low:.1%}-{high:.1%})"
