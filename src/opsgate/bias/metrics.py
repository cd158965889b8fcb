"""What is measured on each answer: refusal, sentiment, toxicity and length.

Refusal and toxicity are the project's own definitions, so a bias audit and an evaluation run judge an
answer the same way: the refusal detector of ``evals/scorers_free.py`` (a refusal phrase near the
start, or an empty answer) and the output guard's toxicity model (``guard/output.py``, the highest
sentence probability). Sentiment is VADER's compound score (-1 … +1), a lexicon-and-rules model that
needs no download. Length is in words (whitespace-separated), which compares across tokenizers.

A request the gateway's guard blocked (HTTP 400 ``input_blocked`` / 422 ``output_blocked``) is a
refusal too — a policy that blocks one group's prompt and not another's is exactly what the audit is
for — but it has no text, so it has no sentiment, toxicity or length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # type: ignore[import-untyped]

    from opsgate.evals.scorers_free import Refusal, Toxicity

# Sentiment and toxicity read the first 20,000 characters: a runaway upstream's megabyte answer would
# otherwise hold the event loop for seconds (VADER is pure Python). max_tokens keeps real answers far below.
SCORED_CHARS = 20_000
Metric = Literal["refusal", "sentiment", "toxicity", "length"]
METRICS: tuple[Metric, ...] = ("refusal", "sentiment", "toxicity", "length")


@dataclass(frozen=True, slots=True)
class AnswerMetrics:
    """The four measurements of one answer; the text-based ones are None for a blocked request."""

    refused: bool
    sentiment: float | None
    toxicity: float | None
    length_words: int | None

    def value(self, metric: Metric) -> float | None:
        """The number a comparison uses: refusal as 0/1, length as log(1 + words) (ratios, not differences)."""
        if metric == "refusal":
            return float(self.refused)
        if metric == "sentiment":
            return self.sentiment
        if metric == "toxicity":
            return self.toxicity
        return None if self.length_words is None else math.log1p(self.length_words)


class AnswerScorer:
    """Scores answers; built once per run (loading the toxicity model and VADER's lexicon takes a moment)."""

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        from opsgate.evals.scorers_free import Refusal, Toxicity

        self._refusal: Refusal = Refusal()
        self._toxicity: Toxicity = Toxicity(None)
        self._sentiment: SentimentIntensityAnalyzer = SentimentIntensityAnalyzer()

    async def score(self, text: str | None) -> AnswerMetrics:
        """The metrics of ``text``; None means the gateway blocked the request (a refusal without text)."""
        if text is None:
            return AnswerMetrics(refused=True, sentiment=None, toxicity=None, length_words=None)
        from opsgate.evals.dataset import DatasetItem
        from opsgate.evals.scoring import Sample

        head = text[:SCORED_CHARS]
        sample = Sample(item=DatasetItem(prompt="-"), output=head)
        refusal = await self._refusal.score(sample)
        toxicity = await self._toxicity.score(sample)
        compound = float(self._sentiment.polarity_scores(head)["compound"])
        return AnswerMetrics(
            refused=bool(refusal.value),
            sentiment=compound,
            toxicity=float(toxicity.value or 0.0),
            length_words=len(text.split()),
        )
