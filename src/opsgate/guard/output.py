"""Output scanners: toxicity, system-prompt leakage, JSON validity, and confidence from token logprobs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from opsgate.domain.guard_config import (
    ConfidenceScannerConfig,
    JsonScannerConfig,
    SystemPromptLeakScannerConfig,
    ToxicityScannerConfig,
)
from opsgate.guard.base import ScanContext, ScanResult, verdict_for
from opsgate.guard.json_schema import SchemaUnusable, first_violation
from opsgate.guard.prompt_leak import SENTENCE, leaked_chars

_SENTENCE = SENTENCE


_TOKEN = re.compile(r"\b\w\w+\b")


class ToxicityModel:
    """alt-profanity-check's model (TF-IDF + five sigmoid-calibrated linear SVMs), as plain arrays.

    Exported from the package by ``tests/data/guard/export_toxicity_model.py`` (MIT licence): the
    same arithmetic without scikit-learn, whose import takes seconds and whose calls ~10 ms each.
    """

    def __init__(self, path: Path | None = None) -> None:
        with np.load(path or Path(__file__).parent / "data" / "toxicity.npz") as data:
            self.index = {str(word): i for i, word in enumerate(data["words"])}
            self.idf = data["idf"].astype(np.float64)
            self.coef = data["coef"].astype(np.float64)
            self.intercept = data["intercept"]
            self.a = data["a"]
            self.b = data["b"]

    def probability(self, text: str) -> float:
        """The probability that ``text`` is offensive, as ``profanity_check.predict_prob`` gives it."""
        counts: dict[int, int] = {}
        for token in _TOKEN.findall(text.lower()):
            column = self.index.get(token)
            if column is not None:
                counts[column] = counts.get(column, 0) + 1
        columns = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        weights = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self.idf[columns]
        norm = float(np.sqrt(weights @ weights))
        if norm > 0:
            weights /= norm
        decision = self.coef[:, columns] @ weights + self.intercept
        return float(np.mean(1.0 / (1.0 + np.exp(self.a * decision + self.b))))


class ToxicityScanner:
    """Profanity and insults: alt-profanity-check's model, sentence by sentence."""

    name = "toxicity"
    stream_scope = "window"

    def __init__(self, config: ToxicityScannerConfig, model: ToxicityModel | None = None) -> None:
        self.model = model or ToxicityModel()
        self.threshold = config.threshold

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """The highest offensive-language probability of any sentence."""
        sentences = [s for s in _SENTENCE.split(text) if s.strip()]
        if not sentences:
            return ScanResult.clean(text)
        score = max(self.model.probability(sentence) for sentence in sentences)
        return ScanResult(text, verdict_for(score, self.threshold), round(score, 4))


class SystemPromptLeakScanner:
    """How much of the request's system message the answer repeats (fuzzy or by shingles, sentence by sentence)."""

    name = "system_prompt_leak"
    stream_scope = "whole"

    def __init__(self, config: SystemPromptLeakScannerConfig) -> None:
        self.threshold = config.threshold
        self.min_chars = config.min_chars

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """Score: the share of the system prompt's sentence characters found in the answer (partial ratio ≥ 85).

        Linear in the answer over a stream's repeated calls (``prompt_leak``: the read resumes where
        the previous call's text left off); long prompts are compared by word shingles.
        """
        prompt = context.system_prompt
        if not prompt or len(prompt) < self.min_chars or not text:
            return ScanResult.clean(text)
        found, total = leaked_chars(prompt, text, final=context.final)
        if not total or not found:
            return ScanResult.clean(text)
        score = found / total
        verdict = verdict_for(score, self.threshold)
        return ScanResult(text, verdict, round(score, 4), {"sentences_found": f"{found}/{total} chars"})


def wants_json(response_format: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
    """(whether the request asked for JSON, its schema if it gave one)."""
    if not response_format:
        return False, None
    kind = response_format.get("type")
    if kind == "json_object":
        return True, None
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return True, schema if isinstance(schema, dict) else None
    return False, None


class JsonScanner:
    """When the request asked for JSON: the answer must parse, and fit the schema when one was given."""

    name = "json"
    stream_scope = "final"

    def __init__(self, config: JsonScannerConfig) -> None:
        self.threshold = config.threshold

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """Score 1 for invalid JSON or a schema violation."""
        asked, schema = wants_json(context.response_format)
        if not asked:
            return ScanResult.clean(text)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            return ScanResult(text, "fail", 1.0, {"error": f"not JSON: {error.msg} at {error.pos}"})
        except (ValueError, RecursionError) as error:  # an integer of 5,000 digits; nesting past the stack
            return ScanResult(text, "fail", 1.0, {"error": f"not JSON: {type(error).__name__}"})
        if schema is not None:
            # The schema is the client's: checked with no fetching, RE2 patterns and a work budget.
            try:
                problem = first_violation(schema, value)
            except SchemaUnusable as unusable:
                return ScanResult(text, "fail", 1.0, {"error": f"schema unusable: {unusable}"})
            if problem is not None:
                return ScanResult(text, "fail", 1.0, {"error": f"schema: {problem}"})
        return ScanResult.clean(text)


def confidence_stats(entries: list[dict[str, Any]], low_token_logprob: float) -> dict[str, float] | None:
    """Mean and minimum token logprob, mean top-k entropy (nats) and the longest run of low-probability tokens."""
    values = [float(e["logprob"]) for e in entries if isinstance(e, dict) and isinstance(e.get("logprob"), int | float)]
    if not values:
        return None
    run = longest = 0
    for value in values:
        run = run + 1 if value < low_token_logprob else 0
        longest = max(longest, run)
    entropies = []
    for entry in entries:
        top = entry.get("top_logprobs") if isinstance(entry, dict) else None
        if top:
            probs = [math.exp(t["logprob"]) for t in top if isinstance(t, dict) and "logprob" in t]
            mass = sum(probs)
            if mass > 0:
                entropies.append(-sum(p / mass * math.log(p / mass) for p in probs if p > 0))
    stats = {
        "tokens": float(len(values)),
        "mean_logprob": sum(values) / len(values),
        "min_logprob": min(values),
        "low_span": float(longest),
    }
    if entropies:
        stats["mean_entropy"] = sum(entropies) / len(entropies)
    return stats


class ConfidenceScanner:
    """Knowledge-limit detection: a low-confidence answer has low token probabilities.

    Score = 1 - exp(mean token logprob), i.e. one minus the geometric-mean token probability; a run
    of ``max_low_span`` tokens below ``low_token_logprob`` (a made-up name, number or date) is a hit
    whatever the mean.
    """

    name = "confidence"
    stream_scope = "final"

    def __init__(self, config: ConfidenceScannerConfig) -> None:
        self.config = config
        self.threshold = config.threshold

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """Judge the answer's logprobs; an answer without them passes (with a note)."""
        stats = confidence_stats(context.logprobs or [], self.config.low_token_logprob)
        if stats is None:
            return ScanResult(text, "pass", 0.0, {"note": "no logprobs"})
        details: dict[str, Any] = {k: round(v, 4) for k, v in stats.items()}
        if stats["tokens"] < self.config.min_tokens:
            return ScanResult(text, "pass", 0.0, details)
        score = 1.0 - math.exp(stats["mean_logprob"])
        low_span = stats["low_span"] >= self.config.max_low_span
        verdict = "fail" if low_span else verdict_for(score, self.threshold)
        if low_span:
            details["reason"] = "low-probability span"
        return ScanResult(text, verdict, round(score, 4), details)
