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
from functools import cache, lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from opsgate.guard.injection_lexicon import concept_features, concepts, features_of

MODEL_PATH = Path(__file__).parent / "data" / "injection_model.npz"
WINDOW = 48  # tokens per window
STRIDE = 24  # windows overlap by half, so an instruction is whole in at least one of them
_TOKEN = re.compile(r"\w+|[^\w\s]")  # a run of word characters or one symbol (linear: no nesting)
_HASH_MASK = (1 << 46) - 1  # unknown features' keys: -1 - (hash & mask), so key + _KEY_OFFSET fits 48 bits
_KEY_OFFSET = 1 << 47
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
        # A token's or a pair's feature keys depend only on the vocabulary: cached across texts (a
        # chat re-sends its history every turn), bounded because tokens come from clients.
        self._token_keys = lru_cache(maxsize=100_000)(self._keys_of_token)
        self._pair_key = lru_cache(maxsize=200_000)(self._key_of_pair)

    def _key(self, feature: str) -> int:
        index = self.vocabulary.get(feature)
        return index if index is not None else -1 - (hash(feature) & _HASH_MASK)

    def _keys_of_token(self, token: str) -> tuple[tuple[int, ...], frozenset[str]]:
        return tuple(self._key(f) for f in token_features(token)), frozenset(concepts([token]))

    def _key_of_pair(self, first: str, second: str) -> int:
        return self._key(f"b:{first} {second}")

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

        The same features as ``window_features`` (what training saw; a parity test holds them
        equal), but computed with numpy: each distinct token and token pair is turned into integer
        keys once (a known feature is its vocabulary index, an unknown one a negative number from
        its hash), windows are pairs of half-window blocks, and one sort of (window, key) finds
        each window's distinct features.
        """
        toks = tokens(text)
        if len(toks) <= WINDOW:
            return self._logits_of(window_features(toks))
        key = self._key
        distinct: dict[str, int] = {}
        ids = np.fromiter((distinct.setdefault(t, len(distinct)) for t in toks), dtype=np.int64, count=len(toks))
        names = list(distinct)
        cached = [self._token_keys(t) for t in names]
        per_token = [keys for keys, _ in cached]
        concept_sets = [found for _, found in cached]
        pair_key = self._pair_key
        pair_keys = np.fromiter((pair_key(a, b) for a, b in pairwise(toks)), dtype=np.int64, count=len(toks) - 1)
        unique_lengths = np.array([len(k) for k in per_token], dtype=np.int64)
        flat = np.fromiter((k for keys in per_token for k in keys), dtype=np.int64, count=int(unique_lengths.sum()))
        first = np.cumsum(unique_lengths) - unique_lengths
        lengths = unique_lengths[ids]
        ends = np.cumsum(lengths)
        within = np.arange(int(ends[-1])) - np.repeat(ends - lengths, lengths)
        token_keys = flat[np.repeat(first[ids], lengths) + within]
        token_pos = np.repeat(np.arange(len(toks)), lengths)
        starts = np.arange(0, max(1, len(toks) - WINDOW + STRIDE), STRIDE)
        window_ids, all_keys = [], []
        for offset in range(WINDOW // STRIDE):
            # Window w holds positions [w*S, w*S+W): the occurrence at p is in windows p//S - offset.
            for positions, keys, last in (
                (token_pos, token_keys, WINDOW),
                (np.arange(len(toks) - 1), pair_keys, WINDOW - 1),
            ):
                window = positions // STRIDE - offset
                inside = (window >= 0) & (window < len(starts)) & (positions - window * STRIDE < last)
                window_ids.append(window[inside])
                all_keys.append(keys[inside])
        # Concepts as bit masks: a window's concepts are the OR of its two blocks' masks.
        bits: dict[str, int] = {}
        masks = np.array(
            [sum(1 << bits.setdefault(c, len(bits)) for c in found) for found in concept_sets], dtype=np.int64
        )[ids]
        block_masks = np.bitwise_or.reduceat(masks, np.arange(0, len(toks), STRIDE))
        concept_of_bit = sorted(bits, key=bits.__getitem__)
        extra_keys: list[int] = []
        extra_windows: list[int] = []
        keys_of_mask: dict[int, list[int]] = {}
        for w in range(len(starts)):
            mask = int(block_masks[w]) | (int(block_masks[w + 1]) if w + 1 < len(block_masks) else 0)
            if not mask:
                continue
            mask_keys = keys_of_mask.get(mask)
            if mask_keys is None:
                found = {c for i, c in enumerate(concept_of_bit) if mask >> i & 1}
                mask_keys = keys_of_mask[mask] = [key(f) for f in features_of(found)]
            extra_keys += mask_keys
            extra_windows += [w] * len(mask_keys)
        window_ids.append(np.array(extra_windows, dtype=np.int64))
        all_keys.append(np.array(extra_keys, dtype=np.int64))
        windows = np.concatenate(window_ids)
        keys = np.concatenate(all_keys)
        combined = np.sort((windows << 48) | (keys + _KEY_OFFSET))
        combined = combined[np.concatenate(([True], combined[1:] != combined[:-1]))]  # distinct (window, key)
        window_of = combined >> 48
        key_of = (combined & ((1 << 48) - 1)) - _KEY_OFFSET
        counts = np.bincount(window_of, minlength=len(starts))
        known = key_of >= 0
        sums = np.bincount(
            window_of[known], weights=self.weights[key_of[known]].astype(np.float64), minlength=len(starts)
        )
        logits: list[float] = (self.bias + sums / np.sqrt(np.maximum(counts, 1))).tolist()
        return logits

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
