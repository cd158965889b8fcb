"""A semantic injection signal without a forward pass: static token embeddings distilled from MiniLM.

Every WordPiece token of the bundled all-MiniLM-L6-v2 was run through the encoder alone, reduced by
PCA and weighted by a Zipf/SIF rank weight (the model2vec recipe; ``training.embed_distil``). A text
is tokenised (the MiniLM tokenizer, shipped inside the ``.npz``), each window of ``WINDOW`` tokens
is the L2-normalised mean of its tokens' rows, and a small head (a logistic regression, or one
hidden layer) gives each window a logit; the text's logit is the highest. Numpy and ``tokenizers``
only: one tokenizer call and a gather, about a millisecond for 32 KB.

Not wired into the scanner: ``training.embed_loso`` measures whether it generalises to outside
authors, alone and combined with ``injection_model``.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

EMBED_PATH = Path(__file__).parent / "data" / "injection_embed.npz"
WINDOW = 64  # WordPiece tokens per window
STRIDE = WINDOW // 2  # half-overlapping, so an instruction is whole in at least one window
# Characters read per text: past this many per token a window would be padding anyway (a WordPiece
# token spans at most ~100 characters); bounds the tokenizer on a huge input.
MAX_CHARS = 4 * 1024 * 1024

Floats = NDArray[np.float32]


def quantise(table: Floats) -> tuple[NDArray[np.int8], Floats]:
    """Symmetric int8 per column: (codes, scales); ``codes * scales`` is within half a step of ``table``."""
    scales = (np.abs(table).max(axis=0) / 127.0).astype(np.float32)
    scales[scales == 0] = 1.0
    codes = np.clip(np.rint(table / scales), -127, 127).astype(np.int8)
    return codes, scales


def load_tokenizer(data: bytes) -> Tokenizer:
    """The WordPiece tokenizer from its JSON, with the encoder's truncation and padding turned off."""
    tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def token_ids(tokenizer: Tokenizer, text: str) -> NDArray[np.int64]:
    """The text's WordPiece ids, without ``[CLS]``/``[SEP]``."""
    return np.asarray(tokenizer.encode(text[:MAX_CHARS], add_special_tokens=False).ids, dtype=np.int64)


def window_vectors(ids: NDArray[np.int64], table: Floats) -> Floats:
    """The unit-length mean of each window's rows (one window, possibly empty, for a short text)."""
    if len(ids) <= WINDOW:
        vectors = table[ids].mean(axis=0, keepdims=True) if len(ids) else np.zeros((1, table.shape[1]), np.float32)
    else:
        starts = np.arange(0, len(ids) - WINDOW + STRIDE, STRIDE)
        # A window is two consecutive STRIDE-token blocks (WINDOW == 2 * STRIDE): one reduceat over
        # the gathered rows, no prefix sums (float64 cumsum cost 9 ms for 32 KB, this ~1 ms).
        blocks = np.add.reduceat(table[ids], np.arange(0, len(ids), STRIDE), axis=0)
        following = np.zeros_like(blocks[: len(starts)])
        following[: len(blocks) - 1] = blocks[1 : len(starts) + 1]
        counts = np.minimum(starts + WINDOW, len(ids)) - starts
        vectors = (blocks[: len(starts)] + following) / counts[:, None].astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: Floats = vectors / np.maximum(norms, 1e-12)
    return out


class Head:
    """Logistic regression (``hidden`` empty) or one tanh hidden layer, over window vectors."""

    def __init__(self, w1: Floats, b1: Floats, w2: Floats, b2: float) -> None:
        self.w1, self.b1, self.w2, self.b2 = w1, b1, w2, b2

    def logits(self, x: Floats) -> NDArray[np.float64]:
        """One logit per row of ``x``."""
        hidden = np.tanh(x @ self.w1 + self.b1) if self.w1.size else x
        out: NDArray[np.float64] = (hidden @ self.w2).astype(np.float64) + self.b2
        return out


class EmbedModel:
    """Scores texts with the shipped table and head (``injection_embed.npz``, or any of its layout)."""

    def __init__(self, table: Floats, tokenizer: Tokenizer, head: Head, operating_logit: float, a: float = 1.0):
        self.table = table
        self.tokenizer = tokenizer
        self.head = head
        self.operating_logit = operating_logit
        self.a = a

    @classmethod
    def load(cls, path: Path = EMBED_PATH) -> EmbedModel:
        """The model stored at ``path``."""
        with np.load(path, allow_pickle=False) as data:
            table = data["codes"].astype(np.float32) * data["scales"].astype(np.float32)
            head = Head(
                data["w1"].astype(np.float32),
                data["b1"].astype(np.float32),
                data["w2"].astype(np.float32),
                float(data["b2"]),
            )
            operating, a = (float(x) for x in data["calibration"])
            return cls(table, load_tokenizer(bytes(data["tokenizer"])), head, operating, a)

    def save(self, path: Path, codes: NDArray[np.int8], scales: Floats, tokenizer_json: bytes) -> None:
        """Write the table (as its int8 codes), tokenizer, head and operating point."""
        head = self.head
        np.savez_compressed(
            path,
            codes=codes,
            scales=scales,
            tokenizer=np.frombuffer(tokenizer_json, dtype=np.uint8),
            w1=head.w1.astype(np.float16),
            b1=head.b1.astype(np.float16),
            w2=head.w2.astype(np.float16),
            b2=np.float64(head.b2),
            calibration=np.array([self.operating_logit, self.a], dtype=np.float64),
        )

    def window_logits(self, text: str) -> NDArray[np.float64]:
        """The logit of each window of ``text``."""
        return self.head.logits(window_vectors(token_ids(self.tokenizer, text), self.table))

    def logit(self, text: str) -> float:
        """The highest window logit."""
        return float(self.window_logits(text).max())

    def score(self, text: str) -> float:
        """0-1, crossing 0.5 at the operating point."""
        return 1.0 / (1.0 + math.exp(-self.a * (self.logit(text) - self.operating_logit)))


@cache
def shipped_embed_model() -> EmbedModel:
    """The shipped model, loaded once per process (read-only after loading)."""
    return EmbedModel.load()
