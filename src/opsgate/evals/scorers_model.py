"""Scorers that call a model through the gateway: embedding similarity and the pointwise judge."""

from __future__ import annotations

import math

from opsgate.evals.client import GatewayClient
from opsgate.evals.judge import PointwiseJudge
from opsgate.evals.scoring import Sample, Score, Scorer, references_of

DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"  # the embedded MiniLM of the default config


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors (0 for a zero vector)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


class EmbeddingSimilarity:
    """Cosine similarity between the answer's and the best reference's embeddings (any embedding alias)."""

    name = "embedding"
    kind = "score"
    higher_is_better = True
    needs_logprobs = False

    def __init__(self, client: GatewayClient, model: str, metadata: dict[str, str]) -> None:
        self.client = client
        self.model = model
        self.metadata = {**metadata, "purpose": "eval", "eval_role": "scorer"}

    async def score(self, sample: Sample) -> Score:
        """The highest cosine over the references."""
        references = references_of(sample)
        vectors = await self.client.embed(self.model, [sample.output or " ", *references], self.metadata)
        best = max(cosine(vectors[0], v) for v in vectors[1:])
        return Score(best, None, {"model": self.model})


def model_scorer(
    name: str, arg: str | None, client: GatewayClient, metadata: dict[str, str], repeats: int
) -> Scorer | None:
    """``embedding[:ALIAS]`` or ``judge:ALIAS``; None for other names."""
    if name == "embedding":
        return EmbeddingSimilarity(client, arg or DEFAULT_EMBEDDING_MODEL, metadata)
    if name == "judge":
        if not arg:
            raise ValueError("judge needs a model alias: judge:ALIAS (or --judge ALIAS)")
        return PointwiseJudge(client, arg, repeats, metadata=metadata)
    return None
