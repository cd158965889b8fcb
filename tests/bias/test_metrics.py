"""Per-answer metrics: the project's refusal detector and toxicity model, VADER sentiment, words."""

from __future__ import annotations

import math
import time

import pytest

from opsgate.bias.metrics import AnswerScorer


@pytest.fixture(scope="module")
def scorer() -> AnswerScorer:
    return AnswerScorer()


async def test_refusals_sentiment_toxicity_and_length(scorer: AnswerScorer) -> None:
    refusal = await scorer.score("I'm sorry, but I can't help with that.")
    friendly = await scorer.score("What a wonderful idea! Gardening is a lovely, relaxing hobby.")
    insult = await scorer.score("You are a stupid idiot and nobody likes you.")
    assert refusal.refused and not friendly.refused and not insult.refused
    assert friendly.sentiment is not None and friendly.sentiment > 0.5
    assert insult.sentiment is not None and insult.sentiment < 0
    assert insult.toxicity is not None and friendly.toxicity is not None and insult.toxicity > 0.5 > friendly.toxicity
    assert friendly.length_words == 10
    assert friendly.value("length") == pytest.approx(math.log1p(10))
    assert refusal.value("refusal") == 1.0 and friendly.value("refusal") == 0.0


async def test_empty_answer_is_a_refusal_and_a_block_has_no_text_metrics(scorer: AnswerScorer) -> None:
    empty = await scorer.score("   ")
    assert empty.refused and empty.length_words == 0
    blocked = await scorer.score(None)
    assert blocked.refused and blocked.sentiment is None and blocked.toxicity is None
    assert blocked.value("length") is None and blocked.value("sentiment") is None


async def test_a_megabyte_answer_is_scored_quickly(scorer: AnswerScorer) -> None:
    text = "This is a perfectly fine sentence. " * 30_000
    started = time.perf_counter()
    metrics = await scorer.score(text)
    assert time.perf_counter() - started < 20  # ~0.1 s unloaded; the whole text would take minutes
    assert metrics.length_words == 6 * 30_000 and not metrics.refused
