"""Mergeable window summaries: counts, fixed log-scale histograms and weighted embedding reservoirs.

One summary per (bucket, alias, tenant, replica) grows as records arrive; a window is the merge of
its buckets' summaries, so a check's cost depends on the number of buckets, never on traffic.

The reservoir is a bottom-k sketch: every eligible record of a bucket draws a uniform key ``u`` and
the k smallest keys are kept (a record is embedded only when its key would enter, so embedding work
is ~k·ln(N/k) per bucket). The k smallest keys of a union are among the k smallest of each part, so
merging buckets by keeping the k smallest keys is exactly a uniform sample of the whole window: a
busy hour's records are drawn in proportion to its traffic (its keys are smaller), a quiet hour's
do not count as much.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from opsgate.drift.features import OTHER, Observation

BINS_PER_OCTAVE = 4
MAX_BIN = 1 + BINS_PER_OCTAVE * 40  # 2**40 characters: any real length fits
MAX_CATEGORIES = 64  # per counter; past it new names count as "other"
QUANT = 127.0  # unit-vector components stored as int8


def length_bin(value: int) -> int:
    """Quarter-octave bin of a non-negative length: 0 for 0, then 1 + floor(4·log2(v))."""
    if value <= 0:
        return 0
    return min(MAX_BIN, 1 + math.floor(BINS_PER_OCTAVE * math.log2(value)))


def bin_value(index: int) -> float:
    """A representative value of a bin (its geometric middle)."""
    if index <= 0:
        return 0.0
    return float(2.0 ** ((index - 1 + 0.5) / BINS_PER_OCTAVE))


@dataclass
class Histogram:
    """Counts per fixed log-scale bin, with the exact count and sum for the mean."""

    bins: Counter[int] = field(default_factory=Counter)
    count: int = 0
    total: float = 0.0

    def add(self, value: int) -> None:
        """Count one value."""
        self.bins[length_bin(value)] += 1
        self.count += 1
        self.total += value

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts."""
        self.bins.update(other.bins)
        self.count += other.count
        self.total += other.total

    def mean(self) -> float:
        """The exact mean (0 when empty)."""
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """Approximate quantile: the middle of the bin that holds it (within ±9% for q in (0, 1))."""
        if not self.count:
            return 0.0
        wanted = q * self.count
        seen = 0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= wanted:
                return bin_value(index)
        return bin_value(max(self.bins))

    def stats(self) -> dict[str, float]:
        """Mean, p50 and p95 for reports."""
        return {"mean": round(self.mean(), 2), "p50": self.quantile(0.5), "p95": self.quantile(0.95)}

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"bins": {str(k): v for k, v in self.bins.items()}, "count": self.count, "total": self.total}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        """Inverse of ``to_json``."""
        return cls(Counter({int(k): int(v) for k, v in data.get("bins", {}).items()}), data["count"], data["total"])


def bounded_add(counter: Counter[str], name: str, count: int = 1) -> None:
    """Count ``name``, folding new names into ``other`` once the counter is full."""
    if name not in counter and len(counter) >= MAX_CATEGORIES:
        name = OTHER
    counter[name] += count


class Reservoir:
    """A bottom-k sample of embeddings by uniform key (unit vectors, stored as int8)."""

    def __init__(self, capacity: int, dimensions: int = 0) -> None:
        self.capacity = capacity
        self.dimensions = dimensions
        self.population = 0  # eligible records this sample stands for
        self.u = np.zeros(0, dtype=np.float64)
        self.vectors = np.zeros((0, dimensions), dtype=np.int8)

    def __len__(self) -> int:
        return int(self.u.shape[0])

    def wants(self, key: float) -> bool:
        """Whether an item with uniform key ``key`` would enter (bottom-k: below the k-th smallest)."""
        return len(self) < self.capacity or key < float(self.u.max())

    def add(self, key: float, vector: NDArray[np.float32]) -> None:
        """Keep the item if its key is among the ``capacity`` smallest."""
        if not self.wants(key):
            return
        if self.dimensions == 0 or self.vectors.shape[1] != vector.shape[0]:
            if len(self):
                return  # a different model's vector: keep one kind per reservoir
            self.dimensions = int(vector.shape[0])
            self.vectors = np.zeros((0, self.dimensions), dtype=np.int8)
        quantised = np.clip(np.rint(vector * QUANT), -127, 127).astype(np.int8)
        if len(self) >= self.capacity:
            worst = int(self.u.argmax())
            self.u[worst] = key
            self.vectors[worst] = quantised
            return
        self.u = np.append(self.u, key)
        self.vectors = np.vstack([self.vectors, quantised[None, :]])

    def array(self) -> NDArray[np.float32]:
        """The kept vectors as unit float32 rows."""
        values = self.vectors.astype(np.float32) / np.float32(QUANT)
        norms = np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-6)
        result: NDArray[np.float32] = (values / norms).astype(np.float32)
        return result

    @staticmethod
    def merge(parts: list[Reservoir], capacity: int) -> Reservoir:
        """The uniform sample of the union of ``parts``: the ``capacity`` smallest keys."""
        parts = [p for p in parts if len(p)]
        out = Reservoir(capacity, parts[0].dimensions if parts else 0)
        out.population = 0
        if not parts:
            return out
        dims = out.dimensions
        parts = [p for p in parts if p.dimensions == dims]
        out.population = sum(p.population for p in parts)
        u = np.concatenate([p.u for p in parts])
        vectors = np.concatenate([p.vectors for p in parts])
        keep = np.argsort(u, kind="stable")[:capacity]
        out.u, out.vectors = u[keep], vectors[keep]
        return out

    def meta(self) -> dict[str, Any]:
        """The JSON part (keys and counts); the vectors go in a blob."""
        return {
            "population": self.population,
            "dimensions": self.dimensions,
            "u": self.u.tolist(),
        }

    @classmethod
    def load(cls, capacity: int, meta: dict[str, Any], blob: bytes) -> Reservoir:
        """Inverse of ``meta`` plus the vectors' bytes."""
        out = cls(capacity, int(meta.get("dimensions", 0)))
        out.population = int(meta.get("population", 0))
        out.u = np.asarray(meta.get("u", []), dtype=np.float64)
        rows = len(out.u)
        if rows and out.dimensions and len(blob) == rows * out.dimensions:
            out.vectors = np.frombuffer(blob, dtype=np.int8).reshape(rows, out.dimensions).copy()
        else:
            out.u = out.u[:0]
            out.vectors = np.zeros((0, out.dimensions), dtype=np.int8)
        return out


@dataclass
class WindowSummary:
    """Everything a drift check needs of a bucket or a window."""

    capacity: int = 64
    requests: int = 0
    prompt_length: Histogram = field(default_factory=Histogram)
    language: Counter[str] = field(default_factory=Counter)
    input_scanned: int = 0
    input_failed: Counter[str] = field(default_factory=Counter)
    answers: int = 0
    answer_length: Histogram = field(default_factory=Histogram)
    finish_reason: Counter[str] = field(default_factory=Counter)
    refusals: int = 0
    output_scanned: int = 0
    output_failed: Counter[str] = field(default_factory=Counter)
    prompt_embeddings: Reservoir = field(init=False)
    answer_embeddings: Reservoir = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_embeddings = Reservoir(self.capacity)
        self.answer_embeddings = Reservoir(self.capacity)

    def add(self, obs: Observation) -> None:
        """Count one record's features (the embeddings come later, from the embedding worker)."""
        self.requests += 1
        if obs.prompt_chars is not None:
            self.prompt_length.add(obs.prompt_chars)
            self.prompt_embeddings.population += 1
        if obs.language is not None:
            bounded_add(self.language, obs.language)
        if obs.input_scanned:
            self.input_scanned += 1
            for name in obs.input_failed:
                bounded_add(self.input_failed, name)
        if obs.answered:
            self.answers += 1
            bounded_add(self.finish_reason, obs.finish_reason or "none")
            if obs.answer_chars is not None:
                self.answer_length.add(obs.answer_chars)
                self.answer_embeddings.population += 1
                self.refusals += int(obs.refused)
            if obs.output_scanned:
                self.output_scanned += 1
                for name in obs.output_failed:
                    bounded_add(self.output_failed, name)

    def merge(self, other: WindowSummary) -> None:
        """Add another summary's counts (reservoirs are merged separately, see ``merge_all``)."""
        self.requests += other.requests
        self.prompt_length.merge(other.prompt_length)
        self.language.update(other.language)
        self.input_scanned += other.input_scanned
        self.input_failed.update(other.input_failed)
        self.answers += other.answers
        self.answer_length.merge(other.answer_length)
        self.finish_reason.update(other.finish_reason)
        self.refusals += other.refusals
        self.output_scanned += other.output_scanned
        self.output_failed.update(other.output_failed)

    @classmethod
    def merge_all(cls, parts: list[WindowSummary], capacity: int) -> WindowSummary:
        """One summary of many, with weighted reservoirs of ``capacity`` items."""
        out = cls(capacity=capacity)
        for part in parts:
            out.merge(part)
        out.prompt_embeddings = Reservoir.merge([p.prompt_embeddings for p in parts], capacity)
        out.answer_embeddings = Reservoir.merge([p.answer_embeddings for p in parts], capacity)
        return out

    def to_row(self) -> tuple[dict[str, Any], bytes]:
        """JSON-able counts and reservoir metadata, and one blob holding both reservoirs' vectors."""
        prompt, answer = self.prompt_embeddings, self.answer_embeddings
        data = {
            "v": 1,
            "requests": self.requests,
            "prompt_length": self.prompt_length.to_json(),
            "language": dict(self.language),
            "input_scanned": self.input_scanned,
            "input_failed": dict(self.input_failed),
            "answers": self.answers,
            "answer_length": self.answer_length.to_json(),
            "finish_reason": dict(self.finish_reason),
            "refusals": self.refusals,
            "output_scanned": self.output_scanned,
            "output_failed": dict(self.output_failed),
            "prompt_embeddings": prompt.meta(),
            "answer_embeddings": answer.meta(),
        }
        return data, prompt.vectors.tobytes() + answer.vectors.tobytes()

    @classmethod
    def from_row(cls, data: dict[str, Any], blob: bytes, capacity: int) -> WindowSummary:
        """Inverse of ``to_row``."""
        out = cls(capacity=capacity)
        out.requests = int(data["requests"])
        out.prompt_length = Histogram.from_json(data["prompt_length"])
        out.language = Counter(data.get("language", {}))
        out.input_scanned = int(data.get("input_scanned", 0))
        out.input_failed = Counter(data.get("input_failed", {}))
        out.answers = int(data.get("answers", 0))
        out.answer_length = Histogram.from_json(data["answer_length"])
        out.finish_reason = Counter(data.get("finish_reason", {}))
        out.refusals = int(data.get("refusals", 0))
        out.output_scanned = int(data.get("output_scanned", 0))
        out.output_failed = Counter(data.get("output_failed", {}))
        prompt_meta, answer_meta = data["prompt_embeddings"], data["answer_embeddings"]
        split = len(prompt_meta.get("u", [])) * int(prompt_meta.get("dimensions", 0))
        out.prompt_embeddings = Reservoir.load(capacity, prompt_meta, blob[:split])
        out.answer_embeddings = Reservoir.load(capacity, answer_meta, blob[split:])
        return out
