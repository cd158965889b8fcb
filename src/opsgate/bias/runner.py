"""Send every prompt of the counterfactual sets through a gateway's ``/v1`` with the official ``openai`` SDK.

Each request carries ``metadata: {"opsgate_purpose": "bias", ...}`` (plus the run, dimension, group
and template), so audit traffic is recognisable in the request log and can be filtered out of
dashboards. The SDK retries 408/409/429/5xx and connection failures with backoff (honouring
``Retry-After``); what still fails is an *error*, counted and reported, never raised. A guard block
(400 ``input_blocked``, 422 ``output_blocked``) is not an error: it is the gateway refusing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

from opsgate.bias.metrics import AnswerMetrics, AnswerScorer
from opsgate.bias.templates import CounterfactualSet

PURPOSE = "bias"
BLOCK_CODES = frozenset({"input_blocked", "output_blocked"})


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How each prompt is sent; every prompt of a set gets the same seed and sampling."""

    model: str
    max_tokens: int = 128
    temperature: float = 0.0
    concurrency: int = 4
    timeout: float = 120.0
    retries: int = 3
    give_up_after: int = 20  # errors in a row, before any answer, after which the rest is not sent
    run_id: str = field(default_factory=lambda: "bias_" + secrets.token_hex(6))


@dataclass(slots=True)
class Answer:
    """What one prompt of one set got back."""

    set_key: str
    dimension: str
    template_id: str
    sample: int
    group: str
    prompt: str
    outcome: str  # "answered" | "blocked" | "error"
    text: str = ""
    status: int | None = None
    error: str = ""
    metrics: AnswerMetrics | None = None
    latency_ms: float = 0.0

    def to_dict(self, text_chars: int = 500) -> dict[str, Any]:
        """JSON form (the answer cut to ``text_chars``)."""
        metrics = self.metrics
        return {
            "set": self.set_key,
            "dimension": self.dimension,
            "template": self.template_id,
            "sample": self.sample,
            "group": self.group,
            "prompt": self.prompt,
            "outcome": self.outcome,
            "status": self.status,
            "error": self.error or None,
            "text": self.text[:text_chars],
            "refused": None if metrics is None else metrics.refused,
            "sentiment": None if metrics is None else metrics.sentiment,
            "toxicity": None if metrics is None else metrics.toxicity,
            "length_words": None if metrics is None else metrics.length_words,
            "latency_ms": round(self.latency_ms, 1),
        }


def make_client(base_url: str, api_key: str | None, settings: RunSettings) -> openai.AsyncOpenAI:
    """The SDK client for a gateway's ``/v1`` (a placeholder key when the gateway has auth off)."""
    return openai.AsyncOpenAI(
        base_url=base_url.rstrip("/"),
        api_key=api_key or "opsgate-bias",
        timeout=settings.timeout,
        max_retries=settings.retries,
    )


def _messages(counterfactual: CounterfactualSet, prompt: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": counterfactual.system}] if counterfactual.system else []
    return [*messages, {"role": "user", "content": prompt}]


def _error_answer(counterfactual: CounterfactualSet, group: str, error: str = "") -> Answer:
    """The answer of one group's prompt as an error (until a call succeeds, or when it is not sent)."""
    return Answer(
        counterfactual.key,
        counterfactual.dimension,
        counterfactual.template_id,
        counterfactual.sample,
        group,
        counterfactual.prompts[group],
        "error",
        error=error,
    )


async def ask(
    client: openai.AsyncOpenAI,
    scorer: AnswerScorer,
    counterfactual: CounterfactualSet,
    group: str,
    settings: RunSettings,
) -> Answer:
    """Send one group's prompt of a set and score the answer; never raises for an HTTP or network failure."""
    prompt = counterfactual.prompts[group]
    answer = _error_answer(counterfactual, group)
    started = time.perf_counter()
    try:
        completion = await client.chat.completions.create(
            model=settings.model,
            messages=_messages(counterfactual, prompt),  # type: ignore[arg-type]
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            seed=counterfactual.seed,
            metadata={
                "opsgate_purpose": PURPOSE,
                "bias_run": settings.run_id,
                "bias_dimension": counterfactual.dimension,
                "bias_group": group,
                "bias_template": counterfactual.template_id,
            },
            # A cached answer for one group would not be a fresh draw; the audit compares fresh draws.
            extra_headers={"Cache-Control": "no-cache"},
        )
    except openai.APIStatusError as error:
        answer.latency_ms = (time.perf_counter() - started) * 1000.0
        answer.status = error.status_code
        code = error.code if isinstance(error.code, str) else None
        body = error.body if isinstance(error.body, dict) else {}
        answer.error = str(body.get("message") or error.message)[:300]
        if code in BLOCK_CODES:
            answer.outcome = "blocked"
            answer.metrics = await scorer.score(None)
        return answer
    except openai.APIError as error:  # connection refused, timeout, an answer that is not JSON
        answer.latency_ms = (time.perf_counter() - started) * 1000.0
        answer.error = f"{type(error).__name__}: {error}"[:300]
        return answer
    answer.latency_ms = (time.perf_counter() - started) * 1000.0
    answer.status = 200
    answer.outcome = "answered"
    answer.text = "".join(choice.message.content or "" for choice in completion.choices)
    answer.metrics = await scorer.score(answer.text)
    return answer


async def run_sets(
    client: openai.AsyncOpenAI,
    sets: Sequence[CounterfactualSet],
    settings: RunSettings,
    on_answer: Callable[[Answer], None] | None = None,
    scorer: AnswerScorer | None = None,
) -> list[Answer]:
    """Every prompt of every set, at most ``settings.concurrency`` in flight; answers in set order."""
    scorer = scorer or AnswerScorer()
    gate = asyncio.Semaphore(max(1, settings.concurrency))
    seen = {"answers": 0, "errors": 0}

    async def one(counterfactual: CounterfactualSet, group: str) -> Answer:
        async with gate:
            if seen["answers"] == 0 and seen["errors"] >= settings.give_up_after:
                # A gateway that answered none of the first N is down or misconfigured (wrong key, alias):
                # say so now instead of retrying every remaining request for minutes.
                answer = _error_answer(
                    counterfactual,
                    group,
                    f"not sent: none of the first {settings.give_up_after} requests got an answer",
                )
            else:
                answer = await ask(client, scorer, counterfactual, group, settings)
            seen["errors" if answer.outcome == "error" else "answers"] += 1
        if on_answer is not None:
            on_answer(answer)
        return answer

    jobs = [one(counterfactual, group) for counterfactual in sets for group in counterfactual.prompts]
    return list(await asyncio.gather(*jobs))
