"""Distil static token embeddings from the bundled MiniLM (the model2vec recipe, in numpy).

    nice -n 10 .venv/bin/python -m opsgate.guard.training.embed_distil     # ~2-4 min: /tmp/opsgate-embed-table.npz

Every WordPiece vocabulary token is run through the encoder alone (``[CLS] token [SEP]``) and its
output mean-pooled; the 384-dimensional vectors are centred and reduced by PCA (numpy SVD) to
``DIMS``, then weighted by a Zipf/SIF estimate from the token's rank in the vocabulary
(``sif / (sif + p(rank))``, as model2vec does; BERT's vocabulary is ordered roughly by frequency).
A text is then embedded by a tokenizer call and a mean of table rows: no forward pass at run time.
Deterministic: no sampling anywhere.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from rich.progress import Progress

from opsgate.backends.minilm import SentenceEncoder, _gelu, _layer_norm, default_minilm_dir

TABLE = Path("/tmp/opsgate-embed-table.npz")
DIMS = 128
SIF = 1e-4  # model2vec's default SIF coefficient
BATCH = 1024


def forward_2d(encoder: SentenceEncoder, ids: NDArray[np.int64]) -> NDArray[np.float32]:
    """Mean-pooled (not normalised) encoder outputs of unpadded equal-length sequences.

    ``SentenceEncoder._forward`` multiplies 3-D activations by transposed weights, which numpy runs
    ~100x slower than one 2-D product for short sequences (10 s for 128 three-token rows here); the
    dense layers are done on (batch * length, hidden) instead.
    """
    w = encoder.weights
    cfg = encoder.config
    batch, length = ids.shape
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][np.arange(length)][None, :, :]
        + w["embeddings.token_type_embeddings.weight"][0][None, None, :]
    ).reshape(batch * length, cfg.hidden)
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], cfg.eps)
    head = cfg.hidden // cfg.heads
    scale = np.float32(1.0 / np.sqrt(head))
    transposed = {k: np.ascontiguousarray(v.T) for k, v in w.items() if k.endswith(".weight") and v.ndim == 2}
    for n in range(cfg.layers):
        p = f"encoder.layer.{n}."

        def dense(t: NDArray[np.float32], name: str, p: str = p) -> NDArray[np.float32]:
            out: NDArray[np.float32] = t @ transposed[p + name + ".weight"] + w[p + name + ".bias"]
            return out

        def split(t: NDArray[np.float32]) -> NDArray[np.float32]:
            return t.reshape(batch, length, cfg.heads, head).transpose(0, 2, 1, 3)

        q = split(dense(x, "attention.self.query"))
        k = split(dense(x, "attention.self.key"))
        v = split(dense(x, "attention.self.value"))
        scores = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context = np.einsum("bhqk,bhkd->bqhd", probs, v).reshape(batch * length, cfg.hidden)
        x = _layer_norm(
            dense(context, "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            cfg.eps,
        )
        hidden = _gelu(dense(x, "intermediate.dense"))
        x = _layer_norm(
            dense(hidden, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], cfg.eps
        )
    pooled: NDArray[np.float32] = x.reshape(batch, length, cfg.hidden).mean(axis=1)
    return pooled


def token_vectors(encoder: SentenceEncoder, batch: int = BATCH) -> NDArray[np.float32]:
    """The mean-pooled output of ``[CLS] token [SEP]`` for every vocabulary id."""
    tokenizer = encoder.tokenizer
    size = tokenizer.get_vocab_size()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    out = np.zeros((size, encoder.dimensions), dtype=np.float32)
    with Progress() as progress:
        task = progress.add_task("tokens", total=size)
        for start in range(0, size, batch):
            ids = np.arange(start, min(size, start + batch), dtype=np.int64)
            seq = np.stack([np.full(len(ids), cls), ids, np.full(len(ids), sep)], axis=1)
            out[ids] = forward_2d(encoder, seq)
            progress.update(task, advance=len(ids))
    return out


def reduce(vectors: NDArray[np.float32], dims: int = DIMS, sif: float = SIF) -> tuple[NDArray[np.float32], float]:
    """PCA to ``dims`` (sign fixed so the largest loading of each component is positive), SIF-weighted
    by vocabulary rank; and the share of variance kept."""
    centred = vectors.astype(np.float64) - vectors.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:dims]
    signs = np.sign(components[np.arange(dims), np.abs(components).argmax(axis=1)])
    projected = centred @ (components * signs[:, None]).T
    inv_rank = 1.0 / np.arange(2, len(vectors) + 2)
    proba = inv_rank / inv_rank.sum()
    weighted = projected * (sif / (sif + proba))[:, None]
    kept = float((singular[:dims] ** 2).sum() / (singular**2).sum())
    return weighted.astype(np.float32), kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=TABLE)
    parser.add_argument("--dims", type=int, default=DIMS)
    parser.add_argument("--raw", type=Path, help="cache of the 384-d vectors (skips the forward passes when present)")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.raw and args.raw.exists():
        vectors = np.load(args.raw)["vectors"]
    else:
        vectors = token_vectors(SentenceEncoder(default_minilm_dir()))
        if args.raw:
            np.savez(args.raw, vectors=vectors)
    distilled = time.perf_counter() - started
    table, kept = reduce(vectors, args.dims)
    np.savez(args.out, table=table)
    print(f"{len(table)} tokens x {args.dims}: distilled in {distilled:.0f} s, PCA keeps {kept:.1%} -> {args.out}")


if __name__ == "__main__":
    main()
