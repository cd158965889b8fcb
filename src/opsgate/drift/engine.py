"""One drift check: every feature's test between a reference and a current window, and the decision.

The family-wise false-alarm rate of a check is held at ``alpha`` by Holm's step-down correction
over every test run (statsmodels). A feature drifts when its Holm-adjusted p-value is below alpha
AND its effect reaches the configured minimum: with months of traffic, trivial changes are
"significant", and nobody wants a ticket for a 0.3-point shift.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from statsmodels.stats.multitest import multipletests

from opsgate.domain.drift_config import DriftConfig
from opsgate.drift.stats import (
    TestResult,
    categorical_test,
    embedding_test,
    numeric_test,
    permutations_for,
    rate_test,
)
from opsgate.drift.summary import WindowSummary

DriftResult = dict[str, Any]
_OUTPUT_SCANNER_WORDS = {
    "toxicity": "share of answers flagged toxic",
    "pii": "share of answers leaking PII",
    "confidence": "share of low-confidence answers",
}


@dataclass(frozen=True)
class Span:
    """A window's bounds, epoch seconds (start inclusive, end exclusive)."""

    start: float
    end: float


def _min_effect(config: DriftConfig, kind: str) -> float:
    effects = config.min_effect
    return {
        "categorical": effects.total_variation,
        "numeric": effects.relative_change,
        "rate": effects.rate_change,
        "embedding": effects.mmd,
    }[kind]


def _input_tests(ref: WindowSummary, cur: WindowSummary) -> list[TestResult | None]:
    tests = [
        numeric_test("prompt_length", "Prompt length", "input", ref.prompt_length, cur.prompt_length, "prompt length"),
        categorical_test("prompt_language", "Prompt language", "input", ref.language, cur.language, "prompts"),
    ]
    for scanner in sorted(set(ref.input_failed) | set(cur.input_failed)):
        tests.append(
            rate_test(
                f"input_guard:{scanner}",
                f"Input guard: {scanner}",
                "input",
                (ref.input_failed.get(scanner, 0), ref.input_scanned),
                (cur.input_failed.get(scanner, 0), cur.input_scanned),
                f"share of prompts tripping {scanner}",
            )
        )
    return tests


def _output_tests(ref: WindowSummary, cur: WindowSummary) -> list[TestResult | None]:
    tests = [
        numeric_test("answer_length", "Answer length", "output", ref.answer_length, cur.answer_length, "answer length"),
        categorical_test(
            "finish_reason", "Finish reason", "output", ref.finish_reason, cur.finish_reason, "answers ending"
        ),
        rate_test(
            "refusal_rate",
            "Refusal rate",
            "output",
            (ref.refusals, ref.answer_length.count),
            (cur.refusals, cur.answer_length.count),
            "refusal rate",
        ),
    ]
    for scanner in sorted(set(ref.output_failed) | set(cur.output_failed)):
        tests.append(
            rate_test(
                f"output_guard:{scanner}",
                f"Output guard: {scanner}",
                "output",
                (ref.output_failed.get(scanner, 0), ref.output_scanned),
                (cur.output_failed.get(scanner, 0), cur.output_scanned),
                _OUTPUT_SCANNER_WORDS.get(scanner, f"share of answers failing {scanner}"),
            )
        )
    return tests


def _embedding_pairs(config: DriftConfig, ref: WindowSummary, cur: WindowSummary, answers: bool) -> list[Any]:
    sides = [
        ("prompt_embedding", "Prompt embeddings", "input", ref.prompt_embeddings, cur.prompt_embeddings, "prompts")
    ]
    if answers:
        sides.append(
            ("answer_embedding", "Answer embeddings", "output", ref.answer_embeddings, cur.answer_embeddings, "answers")
        )
    need = config.min_samples.embeddings
    return [
        (feature, label, side, a.array(), b.array(), noun)
        for feature, label, side, a, b, noun in sides
        if len(a) >= need and len(b) >= need and a.dimensions == b.dimensions
    ]


def _insufficient(config: DriftConfig, ref: WindowSummary, cur: WindowSummary) -> str | None:
    need = config.min_samples.requests
    if cur.requests < need:
        return f"current window has {cur.requests} requests (needs {need})"
    if ref.requests < need:
        return f"reference window has {ref.requests} requests (needs {need})"
    return None


def run_check(
    config: DriftConfig,
    alias: str,
    tenant: str | None,
    reference: WindowSummary,
    current: WindowSummary,
    reference_span: Span,
    current_span: Span,
    reference_kind: str = "trailing",
    now: float | None = None,
) -> DriftResult:
    """The drift check result (the shape in the drift spec) of ``current`` against ``reference``."""
    result: DriftResult = {
        "alias": alias,
        "tenant": tenant,
        "checked_at": time.time() if now is None else now,
        "reference": {
            "kind": reference_kind,
            "start": reference_span.start,
            "end": reference_span.end,
            "requests": reference.requests,
            "embedded": len(reference.prompt_embeddings) + len(reference.answer_embeddings),
        },
        "current": {
            "start": current_span.start,
            "end": current_span.end,
            "requests": current.requests,
            "embedded": len(current.prompt_embeddings) + len(current.answer_embeddings),
        },
        "alpha": config.alpha,
        "drifted": False,
        "score": 0.0,
        "insufficient": _insufficient(config, reference, current),
        "tests": [],
    }
    if result["insufficient"]:
        return result
    answers = min(reference.answers, current.answers) >= config.min_samples.answers
    found = [t for t in _input_tests(reference, current) + (_output_tests(reference, current) if answers else []) if t]
    pairs = [] if not config.embeddings else _embedding_pairs(config, reference, current, answers)
    permutations = permutations_for(len(found) + len(pairs), config.alpha, config.permutations)
    found += [
        embedding_test(feature, label, side, x, y, permutations=permutations, noun=noun)
        for feature, label, side, x, y, noun in pairs
    ]
    if not found:
        return result
    for test in found:  # a degenerate table can give NaN: that is "no evidence", not an alarm
        if not math.isfinite(test["p_value"]):
            test["p_value"] = 1.0
    reject, adjusted, _, _ = multipletests([t["p_value"] for t in found], alpha=config.alpha, method="holm")
    for test, significant, p_adjusted in zip(found, reject, adjusted, strict=True):
        test["p_adjusted"] = float(p_adjusted)
        test["min_effect"] = _min_effect(config, test["kind"])
        test["drifted"] = bool(significant) and test["effect"] >= test["min_effect"]
    found.sort(key=lambda t: (not t["drifted"], -t["effect"] / t["min_effect"]))
    drifted = [t for t in found if t["drifted"]]
    result["tests"] = found
    result["drifted"] = bool(drifted)
    result["score"] = round(min(1.0, max((t["effect"] for t in drifted), default=0.0)), 6)
    return result


def headline(result: DriftResult) -> str:
    """One line for alerts and tables: the features that moved, or why nothing was decided."""
    if result.get("error"):
        return f"check failed: {result['error']}"
    if result.get("insufficient"):
        return f"insufficient data: {result['insufficient']}"
    moved = [t["summary"] for t in result.get("tests", []) if t.get("drifted")]
    if not moved:
        return "no drift"
    more = f" (+{len(moved) - 3} more)" if len(moved) > 3 else ""
    return "; ".join(moved[:3]) + more
