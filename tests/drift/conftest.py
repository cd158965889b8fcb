"""Drift engine fixtures: the embedded MiniLM (one per session, texts cached) and window builders."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from opsgate.domain.drift_config import DriftConfig
from opsgate.drift.features import Observation, observe
from opsgate.drift.summary import WindowSummary

Embed = Callable[[list[str]], NDArray[np.float32]]


class CachedEncoder:
    """The real MiniLM, remembering texts it has embedded (the constructed prompts repeat a lot)."""

    def __init__(self) -> None:
        from opsgate.backends.minilm import SentenceEncoder, resolve_model_dir

        self.encoder = SentenceEncoder(resolve_model_dir(None))
        self.cache: dict[str, NDArray[np.float32]] = {}

    def __call__(self, texts: list[str]) -> NDArray[np.float32]:
        missing = sorted({t for t in texts if t not in self.cache})
        if missing:
            from threadpoolctl import threadpool_limits

            # One BLAS thread: on a shared 2-core machine more threads thrash (25x slower measured).
            with threadpool_limits(1):
                vectors, _ = self.encoder.encode(missing)
            self.cache.update(zip(missing, vectors, strict=True))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


@pytest.fixture(scope="session")
def encoder() -> Iterator[CachedEncoder]:
    yield CachedEncoder()


def summarise(observations: list[Observation], embed: Embed | None, capacity: int = 64, seed: int = 0) -> WindowSummary:
    """A window summary as the collector builds it: counts for all, embeddings for the reservoir's keys."""
    rng = random.Random(seed)
    summary = WindowSummary(capacity=capacity)
    keyed: dict[str, list[tuple[float, str]]] = {"prompt": [], "answer": []}
    for obs in observations:
        summary.add(obs)
        for side, text in (("prompt", obs.prompt_text), ("answer", obs.answer_text)):
            if text is not None:
                keyed[side].append((rng.random(), text))
    if embed is not None:
        for side, reservoir in (("prompt", summary.prompt_embeddings), ("answer", summary.answer_embeddings)):
            entrants = sorted(keyed[side])[:capacity]  # bottom-k keys: what the collector would embed
            vectors = embed([text for _, text in entrants])
            for (key, _), vector in zip(entrants, vectors, strict=True):
                reservoir.add(key, vector)
    return summary


def observations(records: list[dict[str, Any]]) -> list[Observation]:
    """The drift features of each record."""
    out = [observe(r) for r in records]
    return [o for o in out if o is not None]


def config(**overrides: Any) -> DriftConfig:
    """A drift config with test-friendly minimum samples."""
    data: dict[str, Any] = {"enabled": True, "min_samples": {"requests": 100, "answers": 50, "embeddings": 30}}
    data.update(overrides)
    return DriftConfig.model_validate(data)


def models(*names: str) -> list[dict[str, Any]]:
    """Config entries for model aliases ``names`` (drift summarises and checks configured aliases only)."""
    deployment = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    return [{"name": name, "deployments": [deployment]} for name in names]
