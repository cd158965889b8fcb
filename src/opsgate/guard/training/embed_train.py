"""Train the embedding head of ``injection_embed`` and write ``guard/data/injection_embed.npz``.

    nice -n 10 .venv/bin/python -m opsgate.guard.training.embed_distil          # the table (~1-2 min)
    nice -n 10 .venv/bin/python -m opsgate.guard.training.embed_loso            # LOSO: the operating point
    nice -n 10 .venv/bin/python -m opsgate.guard.training.embed_train           # the shipped head, every row

Windows as ``train.train_rows`` uses them: a benign text gives all its windows as negatives, a short
attack its one window, a long attack only its most suspicious window by a first head (multiple-
instance learning by the max, as the scanner scores). The head is a class-balanced L2 logistic
regression (``train.fit``) or a one-hidden-layer tanh network fitted by L-BFGS from a seeded start.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
from numpy.typing import NDArray
from rich.progress import track

from opsgate.backends.minilm import default_minilm_dir
from opsgate.guard.injection_embed import (
    EMBED_PATH,
    EmbedModel,
    Head,
    load_tokenizer,
    quantise,
    token_ids,
    window_vectors,
)
from opsgate.guard.training.corpus import CORPUS
from opsgate.guard.training.embed_distil import TABLE
from opsgate.guard.training.train import fit, load

Row = dict[str, Any]
Floats = NDArray[np.float32]
SEED = 20261206
L2 = 1.0
HIDDEN = 0  # LOSO: see embed_loso's report; 0 is the logistic regression


def shipped_table(path: Path = TABLE) -> tuple[Floats, NDArray[np.int8], Floats]:
    """The distilled table as it ships (int8 codes times scales), with its codes and scales."""
    codes, scales = quantise(np.load(path)["table"])
    return codes.astype(np.float32) * scales, codes, scales


def tokenizer_json() -> bytes:
    """The bundled MiniLM's tokenizer, shipped inside the ``.npz``."""
    return (default_minilm_dir() / "tokenizer.json").read_bytes()


def featurise(rows: Sequence[Row], table: Floats) -> None:
    """Add each row's ``embed`` (its window vectors), once."""
    tokenizer = load_tokenizer(tokenizer_json())
    for row in track(rows, description="embed windows"):
        if "embed" not in row:
            row["embed"] = window_vectors(token_ids(tokenizer, str(row["text"])), table)


def fit_mlp(x: Floats, y: NDArray[np.float64], l2: float, hidden: int, seed: int = SEED) -> Head:
    """Class-balanced L2 logistic loss through one tanh layer, L-BFGS from a seeded start."""
    n, d = x.shape
    sample = np.where(y > 0, n / (2 * max(1.0, float(y.sum()))), n / (2 * max(1.0, float(n - y.sum()))))
    xd = x.astype(np.float64)
    sizes = (d * hidden, hidden, hidden, 1)

    def unpack(theta: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
        w1, b1, w2, b2 = np.split(theta, np.cumsum(sizes)[:-1])
        return w1.reshape(d, hidden), b1, w2, b2

    def loss(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        w1, b1, w2, b2 = unpack(theta)
        h = np.tanh(xd @ w1 + b1)
        z = h @ w2 + b2[0]
        p = 1.0 / (1.0 + np.exp(-z))
        value = float(np.sum(sample * (np.logaddexp(0, z) - y * z))) + 0.5 * l2 * float((w1 * w1).sum() + w2 @ w2)
        r = sample * (p - y)
        dh = np.outer(r, w2) * (1 - h * h)
        grad = [xd.T @ dh + l2 * w1, dh.sum(axis=0), h.T @ r + l2 * w2, np.array([r.sum()])]
        return value, np.concatenate([g.ravel() for g in grad])

    rng = np.random.default_rng(seed)
    start = np.concatenate(
        [rng.normal(0, 1 / np.sqrt(d), d * hidden), np.zeros(hidden), rng.normal(0, 0.1, hidden), [0]]
    )
    result = scipy.optimize.minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    w1, b1, w2, b2 = unpack(result.x)
    return Head(w1.astype(np.float32), b1.astype(np.float32), w2.astype(np.float32), float(b2[0]))


def fit_head(x: Floats, y: NDArray[np.float64], l2: float, hidden: int) -> Head:
    """A logistic regression (``hidden`` 0) or a one-hidden-layer head."""
    if hidden:
        return fit_mlp(x, y, l2, hidden)
    weights, bias = fit(x.astype(np.float64), y, l2)  # dense works as sparse does
    return Head(np.zeros((0, 0), np.float32), np.zeros(0, np.float32), weights.astype(np.float32), bias)


def train_head(rows: Sequence[Row], l2: float = L2, hidden: int = HIDDEN) -> Head:
    """Two rounds, as ``train.train_rows``: the long attacks' most suspicious window is picked by the first head."""
    blocks: list[Floats] = []
    labels: list[float] = []
    longs = []
    for row in rows:
        windows: Floats = row["embed"]
        if row["label"] and len(windows) > 1:
            longs.append(windows)
            continue
        picked = windows if not row["label"] else windows[:1]
        blocks.append(picked)
        labels += [float(row["label"])] * len(picked)
    x = np.concatenate(blocks)
    y = np.array(labels)
    first = fit_head(x, y, l2, hidden)
    picked_long = [w[int(np.argmax(first.logits(w)))] for w in longs]
    if picked_long:
        x = np.concatenate([x, np.stack(picked_long)])
        y = np.concatenate([y, np.ones(len(picked_long))])
    return fit_head(x, y, l2, hidden)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--loso", type=Path, default=Path("/tmp/opsgate-embed-loso.json"), help="embed_loso's report")
    parser.add_argument("--out", type=Path, default=EMBED_PATH)
    args = parser.parse_args()
    estimate = json.loads(args.loso.read_text())
    config = estimate["config"]
    rows = load(args.corpus)
    table, codes, scales = shipped_table(args.table)
    featurise(rows, table)
    head = train_head(rows, config["l2"], config["hidden"])
    tokenizer = tokenizer_json()
    model = EmbedModel(table, load_tokenizer(tokenizer), head, estimate["embed"]["operating_logit"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out, codes, scales, tokenizer)
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.2f} MB, operating logit {model.operating_logit:.3f}")


if __name__ == "__main__":
    main()
