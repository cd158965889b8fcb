"""LLM-as-judge: pointwise (a 1-5 score with a reason) and pairwise (A vs B, order swapped).

Every judgement is asked ``repeats`` times (default 3, each with its own seed) and reported as
mean, spread (population standard deviation) and agreement (the share of repeats that gave the
most common verdict): one sample from a judge flips across thresholds, so a verdict is never one
sample. Answers are requested with a JSON schema (``response_format``) and checked against it
again here; a reply that does not parse is a failed repeat, and an item whose repeats all failed is
a failed item with that error. Judge calls go through the gateway like every other call, tagged
``metadata.purpose = "eval"`` and ``eval_role = "judge"``.

The embedded SmolLM2 (135M parameters) can serve as a judge for tests, but its verdicts are close
to noise: use a strong model as the judge for decisions.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from typing import Any

import jsonschema
import orjson

from opsgate.evals.client import GatewayClient
from opsgate.evals.scoring import Sample, Score

POINTWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}
PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "winner": {"type": "string", "enum": ["1", "2", "tie"]},
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["winner", "reason"],
    "additionalProperties": False,
}
DEFAULT_RUBRIC = (
    "Rate how well the answer responds to the request: correct, complete, relevant and clear. "
    "1 = wrong or useless, 3 = partly right, 5 = fully correct and helpful."
)
_MAX_SHOWN = 6000  # characters of each text shown to the judge


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + " […]"


def parse_verdict(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The judge's JSON reply checked against ``schema``; ValueError says what is wrong."""
    stripped = text.strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    if start < 0 or end < start:
        raise ValueError(f"unparseable judge output: no JSON object in {stripped[:80]!r}")
    try:
        value = orjson.loads(stripped[start : end + 1])
    except orjson.JSONDecodeError:
        raise ValueError(f"unparseable judge output: {stripped[:80]!r}") from None
    problem = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if problem is not None:
        raise ValueError(f"judge output does not match its schema: {problem.message[:120]}")
    return dict(value)


def agreement(verdicts: list[Any]) -> float:
    """The share of verdicts equal to the most common one."""
    if not verdicts:
        return 0.0
    return Counter(verdicts).most_common(1)[0][1] / len(verdicts)


class _Judge:
    def __init__(
        self,
        client: GatewayClient,
        model: str,
        repeats: int = 3,
        metadata: dict[str, str] | None = None,
        temperature: float = 0.7,
    ) -> None:
        if repeats < 1 or repeats > 20:
            raise ValueError("repeats must be 1-20")
        self.client = client
        self.model = model
        self.repeats = repeats
        self.metadata = {**(metadata or {}), "purpose": "eval", "eval_role": "judge"}
        self.temperature = temperature

    async def _ask(self, prompt: str, schema: dict[str, Any], name: str, seed: int) -> dict[str, Any]:
        result = await self.client.chat(
            self.model,
            [{"role": "user", "content": prompt}],
            self.metadata,
            temperature=self.temperature,
            seed=seed,
            max_tokens=120,  # the schema bounds the reason to 200 characters (~50 tokens)
            response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}},
        )
        if not result.ok:
            raise ValueError(f"judge call failed: {result.error}")
        return parse_verdict(result.text, schema)

    async def _repeat(self, prompts: list[str], schema: dict[str, Any], name: str) -> list[Any]:
        calls = [self._ask(prompt, schema, name, seed) for seed in range(self.repeats) for prompt in prompts]
        return list(await asyncio.gather(*calls, return_exceptions=True))


class PointwiseJudge(_Judge):
    """Scores an answer 1-5 against a rubric; value = mean of the repeats."""

    name = "judge"
    kind = "score"
    higher_is_better = True
    needs_logprobs = False

    def __init__(
        self,
        client: GatewayClient,
        model: str,
        repeats: int = 3,
        rubric: str = DEFAULT_RUBRIC,
        metadata: dict[str, str] | None = None,
        temperature: float = 0.7,
    ) -> None:
        super().__init__(client, model, repeats, metadata, temperature)
        self.rubric = rubric

    def prompt(self, sample: Sample) -> str:
        """The judge's instructions for one sample."""
        reference = f"\n\nA reference answer:\n{_clip(sample.item.reference[0])}" if sample.item.reference else ""
        return (
            f"You are grading an AI assistant's answer. {self.rubric}\n\nThe request:\n"
            f"{_clip(sample.item.input_text())}{reference}\n\nThe answer to grade:\n{_clip(sample.output)}\n\n"
            'Reply with JSON only: {"score": <1-5>, "reason": "<one sentence>"}'
        )

    async def score(self, sample: Sample) -> Score:
        """Mean, spread and agreement of ``repeats`` verdicts; raises when none parsed."""
        outcomes = await self._repeat([self.prompt(sample)], POINTWISE_SCHEMA, "verdict")
        verdicts = [o for o in outcomes if isinstance(o, dict)]
        errors = [str(o) for o in outcomes if isinstance(o, BaseException)]
        if not verdicts:
            raise ValueError(errors[0] if errors else "no verdict")
        scores = [int(v["score"]) for v in verdicts]
        details = {
            "judge": self.model,
            "scores": scores,
            "reasons": [str(v["reason"])[:300] for v in verdicts],
            "mean": statistics.fmean(scores),
            "spread": statistics.pstdev(scores),
            "agreement": agreement(scores),
            "failed_repeats": len(errors),
        }
        if errors:
            details["errors"] = errors[:3]
        return Score(statistics.fmean(scores), None, details)


class PairwiseJudge(_Judge):
    """Which of two answers is better, asked in both orders ``repeats`` times; value = candidate's win
    share (1 win, 0.5 tie, 0 loss), so position bias cancels."""

    name = "pairwise"
    kind = "score"
    higher_is_better = True
    needs_logprobs = False

    @staticmethod
    def prompt(request: str, first: str, second: str) -> str:
        """The judge's instructions for one ordering."""
        return (
            "Two AI assistants answered the same request. Decide which answer is better: more correct, "
            f"complete, relevant and clear.\n\nThe request:\n{_clip(request)}\n\nAnswer 1:\n{_clip(first)}\n\n"
            f"Answer 2:\n{_clip(second)}\n\n"
            'Reply with JSON only: {"winner": "1" | "2" | "tie", "reason": "<one sentence>"}'
        )

    async def compare(self, request: str, baseline: str, candidate: str) -> Score:
        """The candidate's win share over both orders and all repeats."""
        prompts = [self.prompt(request, baseline, candidate), self.prompt(request, candidate, baseline)]
        outcomes = await self._repeat(prompts, PAIRWISE_SCHEMA, "preference")
        wins: list[float] = []
        by_order: dict[str, list[float]] = {"candidate_second": [], "candidate_first": []}
        errors = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                errors.append(str(outcome))
                continue
            candidate_slot = "2" if index % 2 == 0 else "1"
            winner = outcome["winner"]
            value = 0.5 if winner == "tie" else 1.0 if winner == candidate_slot else 0.0
            wins.append(value)
            by_order["candidate_second" if index % 2 == 0 else "candidate_first"].append(value)
        if not wins:
            raise ValueError(errors[0] if errors else "no verdict")
        # Consistent across the swap: both orders' majority verdicts agree.
        consistent = [statistics.fmean(v) for v in by_order.values() if v]
        details = {
            "judge": self.model,
            "wins": wins,
            "mean": statistics.fmean(wins),
            "spread": statistics.pstdev(wins),
            "agreement": agreement(wins),
            "order_gap": abs(consistent[0] - consistent[1]) if len(consistent) == 2 else None,
            "failed_repeats": len(errors),
        }
        return Score(statistics.fmean(wins), None, details)
