"""The learned injection detector: logistic regression on word, word-pair and character-trigram features,
scored over overlapping windows of the text and maximised, so an instruction buried in a long
document is judged on its own window, not diluted by the document around it.

Numpy only at run time: the vocabulary, weights and calibration come from
``guard/data/injection_model.npz``, written by ``python -m opsgate.guard.training.train`` (seeded,
reproducible; data and provenance in ``data/guard/injection/``). Why not a head on the MiniLM
sentence embeddings the gateway already loads: one 256-token forward pass of it costs ~40 ms of CPU
here, so a 32 KB prompt (~30 windows) would take seconds; this model scores 32 KB in milliseconds
and, with character trigrams, reads the other languages and the disguised spellings too.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from opsgate.guard.injection_lexicon import concept_features, concepts, features_of

MODEL_PATH = Path(__file__).parent / "data" / "injection_model.npz"
WINDOW = 48  # tokens per window
STRIDE = 24  # windows overlap by half, so an instruction is whole in at least one of them
_TOKEN = re.compile(r"\w+|[^\w\s]")  # a run of word characters or one symbol (linear: no nesting)
_MAX_GRAM_CHARS = 64  # character trigrams from at most this much of one token (CJK runs are long)
# Zero-width and format characters, and the Unicode tag block (U+E0000-E007F: "ASCII smuggling",
# decoded separately by ``injection_decoders``).
_INVISIBLE = dict.fromkeys(
    [*map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\ufeff\u00ad"), *range(0xE0000, 0xE0080)], None
)


def normalise(text: str) -> str:
    """Lower case, invisible characters dropped, accents removed (``contraseña`` → ``contrasena``)."""
    text = text.translate(_INVISIBLE).lower().replace("\u0131", "i")  # Turkish dotless i
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def tokens(text: str) -> list[str]:
    """The normalised text's tokens."""
    return _TOKEN.findall(normalise(text))


def token_features(token: str) -> list[str]:
    """A token's own features: the word and its character trigrams (with boundary marks)."""
    marked = f"<{token[:_MAX_GRAM_CHARS]}>"
    return [f"w:{token}", *(f"c:{marked[i : i + 3]}" for i in range(len(marked) - 2))]


def window_features(toks: list[str]) -> list[set[str]]:
    """The feature set of each window of ``toks`` (one window for a short text): words, word pairs,
    character trigrams, and the multilingual concepts of ``injection_lexicon``."""
    starts = range(0, max(1, len(toks) - WINDOW + STRIDE), STRIDE) if len(toks) > WINDOW else range(1)
    per_token = {token: token_features(token) for token in set(toks)}
    out = []
    for start in starts:
        part = toks[start : start + WINDOW]
        found = concept_features(part)
        for index, token in enumerate(part):
            found.update(per_token[token])
            if index + 1 < len(part):
                found.add(f"b:{token} {part[index + 1]}")
        out.append(found)
    return out


@dataclass(frozen=True)
class Calibration:
    """Maps a window's logit to a probability (Platt: ``sigmoid(a * z + b)``) and to the decision score."""

    a: float
    b: float
    # The logit of the chosen operating point: the decision score is 0.5 there.
    operating_logit: float

    def probability(self, logit: float) -> float:
        """The calibrated probability that the text is an attack."""
        return 1.0 / (1.0 + math.exp(-(self.a * logit + self.b)))

    def decision(self, logit: float) -> float:
        """0-1, crossing 0.5 at the operating point (what the scanner's threshold is compared with)."""
        return 1.0 / (1.0 + math.exp(-self.a * (logit - self.operating_logit)))


class InjectionModel:
    """Scores texts; built from the shipped ``.npz`` (or any file of the same layout)."""

    def __init__(self, vocabulary: dict[str, int], weights: NDArray[np.float32], bias: float, calibration: Calibration):
        self.vocabulary = vocabulary
        self.weights = weights
        self.bias = bias
        self.calibration = calibration

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> InjectionModel:
        """The model stored at ``path``."""
        with np.load(path, allow_pickle=False) as data:
            names = bytes(data["vocabulary"]).decode("utf-8").split("\n")
            calibration = Calibration(*(float(x) for x in data["calibration"]))
            return cls(
                {name: i for i, name in enumerate(names)},
                data["weights"].astype(np.float32),
                float(data["bias"]),
                calibration,
            )

    def save(self, path: Path) -> None:
        """Write the model (vocabulary as one UTF-8 blob: compact, and no pickles)."""
        names = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        cal = self.calibration
        np.savez_compressed(
            path,
            vocabulary=np.frombuffer("\n".join(names).encode("utf-8"), dtype=np.uint8),
            weights=self.weights.astype(np.float16),
            bias=np.float64(self.bias),
            calibration=np.array([cal.a, cal.b, cal.operating_logit], dtype=np.float64),
        )

    def window_logits(self, text: str) -> list[float]:
        """The logit of each window of ``text``: bias + weights of its known features / sqrt(all its features).

        The same features as ``window_features`` (what training saw), computed once per distinct
        token and token pair as integer keys — a known feature is its vocabulary index, an unknown
        one a negative number from its hash — so a window costs set unions of small ints.
        """
        toks = tokens(text)
        if len(toks) <= WINDOW:
            return self._logits_of(window_features(toks))
        vocabulary, weights = self.vocabulary, self.weights

        def key(feature: str) -> int:
            index = vocabulary.get(feature)
            return index if index is not None else -1 - (hash(feature) & 0x7FFFFFFFFFFF)

        token_keys = {t: [key(f) for f in token_features(t)] for t in set(toks)}
        token_concepts = {t: concepts([t]) for t in token_keys}
        pair_keys: dict[tuple[str, str], int] = {}
        out = []
        for start in range(0, max(1, len(toks) - WINDOW + STRIDE), STRIDE):
            part = toks[start : start + WINDOW]
            keys: set[int] = set()
            found: set[str] = set()
            for index, token in enumerate(part):
                keys.update(token_keys[token])
                found |= token_concepts[token]
                if index + 1 < len(part):
                    pair = (token, part[index + 1])
                    pair_key = pair_keys.get(pair)
                    if pair_key is None:
                        pair_key = pair_keys[pair] = key(f"b:{token} {part[index + 1]}")
                    keys.add(pair_key)
            keys.update(key(f) for f in features_of(found))
            known = np.fromiter((k for k in keys if k >= 0), dtype=np.int64)
            known.sort()
            out.append(self.bias + float(weights[known].sum(dtype=np.float64)) / math.sqrt(len(keys)))
        return out

    def _logits_of(self, windows: list[set[str]]) -> list[float]:
        """Window logits from feature-string sets (the reference path: short texts, and the tests)."""
        vocabulary, weights = self.vocabulary, self.weights
        out = []
        for features in windows:
            # Sorted, and summed in float64: the same logit whatever the set's (hash-seeded) order.
            ids = sorted(vocabulary[f] for f in features if f in vocabulary)
            if not ids:
                out.append(self.bias)
                continue
            out.append(self.bias + float(weights[ids].sum(dtype=np.float64)) / math.sqrt(len(features)))
        return out

    def logit(self, text: str) -> float:
        """The highest window logit."""
        return max(self.window_logits(text), default=self.bias)

    def score(self, text: str) -> tuple[float, float]:
        """(decision score, calibrated probability) of the text's most suspicious window."""
        logit = self.logit(text)
        return self.calibration.decision(logit), self.calibration.probability(logit)


@cache
def shipped_model() -> InjectionModel:
    """The model shipped with opsgate, loaded once per process (read-only after loading)."""
    return InjectionModel.load()
