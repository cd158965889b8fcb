"""Comparing a deployment's answers with its baselines: per prompt, then the run's verdict.

Per prompt: the same text is ``same``; otherwise the cosine similarity of the two answers' MiniLM
embeddings decides ``similar`` (at or above the threshold) or ``changed``, and a unified diff
(``difflib``) of the two answers is kept either way. Per run: at least K changed answers, or a
change of the upstream's reported ``model`` or ``system_fingerprint``, is a behaviour change.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np

from opsgate.drift.sentinel_store import Baseline, RunItem

MAX_DIFF_CHARS = 20_000
COMPARED = ("same", "similar", "changed")


def unified_diff(baseline: str, answer: str) -> str:
    """A unified diff of the baseline and the new answer (capped)."""
    lines = difflib.unified_diff(
        baseline.splitlines(), answer.splitlines(), fromfile="baseline", tofile="now", lineterm=""
    )
    text = "\n".join(lines)
    return text if len(text) <= MAX_DIFF_CHARS else text[:MAX_DIFF_CHARS] + "\n… (diff cut)"


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Cosine similarity, None when either vector is missing or of another size."""
    if a is None or b is None or a.shape != b.shape:
        return None
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return None
    return float(np.dot(a, b) / norm)


def compare_item(item: RunItem, baseline: Baseline | None, threshold: float) -> None:
    """Set ``item.status`` (and exact, similarity, diff) against ``baseline``."""
    if item.answer is None:
        item.status = "failed"
        return
    if baseline is None or baseline.prompt_hash != item.prompt_hash:
        item.status = "baseline"  # new (or edited) golden prompt: its first answer becomes the baseline
        return
    item.exact = item.answer == baseline.answer
    if item.exact:
        item.status, item.similarity = "same", 1.0
        return
    item.diff = unified_diff(baseline.answer, item.answer)
    item.similarity = cosine(item.embedding, baseline.embedding)
    # Without both embeddings the texts differ and nothing says they mean the same: a change.
    item.status = "similar" if item.similarity is not None and item.similarity >= threshold else "changed"


def _moved(now: str | None, before: str | None) -> bool:
    return (now or before) is not None and now != before


@dataclass
class Verdict:
    """A run's outcome. ``status``: changed | unchanged | baseline | failed."""

    status: str
    changed: int
    compared: int
    failed: int
    share: float  # the behaviour_change measurement: 0 unless the run is a change
    raw_share: float  # changed / compared, whatever K says
    model_changed: bool
    fingerprint_changed: bool
    details: dict[str, Any]


def verdict(items: list[RunItem], baselines: dict[str, Baseline], min_changed: int) -> Verdict:
    """The run's verdict from its compared items."""
    compared = [i for i in items if i.status in COMPARED]
    changed = sum(1 for i in compared if i.status == "changed")
    failed = sum(1 for i in items if i.status == "failed")
    models: dict[str, list[str | None]] = {}
    fingerprints: dict[str, list[str | None]] = {}
    for item in compared:
        base = baselines[item.prompt_id]
        if _moved(item.upstream_model, base.upstream_model):
            models.setdefault(f"{base.upstream_model} → {item.upstream_model}", []).append(item.prompt_id)
        if _moved(item.fingerprint, base.fingerprint):
            fingerprints.setdefault(f"{base.fingerprint} → {item.fingerprint}", []).append(item.prompt_id)
    raw = changed / len(compared) if compared else 0.0
    moved = bool(models or fingerprints)
    if compared and (changed >= min_changed or moved):
        status = "changed"
    elif compared:
        status = "unchanged"
    elif not items or failed == len(items):
        status = "failed"
    else:
        status = "baseline"
    share = (1.0 if moved else raw) if status == "changed" else 0.0
    details = {"model": sorted(models), "system_fingerprint": sorted(fingerprints)}
    return Verdict(status, changed, len(compared), failed, share, raw, bool(models), bool(fingerprints), details)
