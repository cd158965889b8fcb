"""Prose with (almost) no personal data, for the fast name recogniser's negatives and its "common word" bit.

Docstrings of the standard library's top-level modules and the long descriptions (READMEs) of the
installed packages, cut into paragraphs (``tests/guard/datasets.py`` and the benchmarks read them from
here too). The first ``BENCH_PARAGRAPHS`` standard-library paragraphs are left out of training:
``bench/pii.py`` counts the names found in exactly those.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sysconfig
from pathlib import Path

BENCH_PARAGRAPHS = 400


def _paragraphs(text: str) -> list[str]:
    out = []
    for block in re.split(r"\n\s*\n", text):
        if block.startswith(("```", "    ", "|", ">>>")):
            continue
        paragraph = " ".join(block.split())
        if len(paragraph) >= 40:
            out.append(paragraph)
    return out


def stdlib_paragraphs() -> list[str]:
    """Docstring paragraphs of the standard library's top-level modules, in file order (~6,000)."""
    paragraphs: list[str] = []
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
    """Paragraphs of the installed packages' long descriptions, sorted by package name."""
    paragraphs: list[str] = []
    dists = sorted(importlib.metadata.distributions(), key=lambda d: str(d.metadata["Name"]).lower())
    for dist in dists:
        text = dist.read_text("METADATA") or ""
        paragraphs += [p for p in _paragraphs(text.partition("\n\n")[2]) if len(p) <= 2000]
    return paragraphs


# Paragraphs that likely name people or firms (credits, licences): not clean negatives.
_CREDITS = re.compile(r"(?i)copyright|author|\u00a9|contributor|maintained by|thanks to|written by|\(c\)")


def prose() -> list[str]:
    """Every training prose paragraph: the standard library's past the benchmark's, and the READMEs."""
    paragraphs = stdlib_paragraphs()[BENCH_PARAGRAPHS:] + package_paragraphs()
    return [p for p in paragraphs if not _CREDITS.search(p)]
