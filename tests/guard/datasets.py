"""The labelled guard sets under tests/data/guard, and the measures the tests and the benchmark report."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import math
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

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


def stdlib_paragraphs() -> list[str]:
    """Paragraphs of every docstring in the standard library's top-level modules (benign text, ~6,000)."""
    paragraphs = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="ignore"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                paragraphs += _paragraphs(ast.get_docstring(node) or "")
    return paragraphs


def package_paragraphs() -> list[str]:
    """Paragraphs of the long descriptions of the installed packages (READMEs: install steps, "ignore", "system" …)."""
    paragraphs = []
    for dist in importlib.metadata.distributions():
        text = dist.read_text("METADATA") or ""
        paragraphs += [p for p in _paragraphs(text.partition("\n\n")[2]) if len(p) <= 2000]
    return paragraphs


def _paragraphs(text: str) -> list[str]:
    out = []
    for block in re.split(r"\n\s*\n", text):
        if block.startswith(("```", "    ", "|", ">>>")):
            continue  # code and tables
        paragraph = " ".join(block.split())
        if len(paragraph) >= 40:
            out.append(paragraph)
    return out
