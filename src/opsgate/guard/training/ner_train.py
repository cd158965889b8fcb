"""Train the fast name recogniser (``pii_fast``) and write ``data/ner_fast.npz``.

    nice -n 10 .venv/bin/python -m opsgate.guard.training.ner_train     # ~1-2 minutes of CPU

Examples: every capitalised word of ``--sentences`` template sentences (``ner_templates``; labels
from the filled slots) and of the training prose (``ner_corpus``; all O). Multinomial logistic
regression with L2, fitted by L-BFGS (scipy) on the features ``FastNames.features`` computes; a
feature seen fewer than twice is dropped, and so is one whose weights all round to zero. The L2
strength is picked by the macro F1 of the name labels on a validation split of template sentences
from another seed (never on the dev, holdout or blind sets). Deterministic: seeded templates, fixed
prose, a fixed string-hash seed (the script re-executes itself with ``PYTHONHASHSEED=0``: Faker
iterates sets), and a deterministic optimiser.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.sparse
from numpy.typing import NDArray

from opsgate.guard.pii_fast import LABELS, MODEL_PATH, FastNames
from opsgate.guard.training.ner_corpus import prose
from opsgate.guard.training.ner_gazetteer import build
from opsgate.guard.training.ner_templates import Span, sentences

TRAIN_SEED = 20261206
VALIDATION_SEED = 777
MIN_COUNT = 2


def examples(model: FastNames, texts: list[tuple[str, list[Span]]]) -> tuple[list[list[str]], list[int]]:
    """Features and label of every capitalised word of ``texts``."""
    features: list[list[str]] = []
    labels: list[int] = []
    for text, spans in texts:
        for candidate in model.candidates(text):
            label = 0
            for start, end, name in spans:
                if start <= candidate.start < end:
                    label = LABELS.index(name)
                    break
            features.append(candidate.features)
            labels.append(label)
    return features, labels


def matrix(features: list[list[str]], vocabulary: dict[str, int]) -> scipy.sparse.csr_matrix:
    """Binary design matrix, with a last column of ones for the bias."""
    rows: list[int] = []
    cols: list[int] = []
    bias = len(vocabulary)
    for row, feats in enumerate(features):
        rows.append(row)
        cols.append(bias)
        for feature in feats:
            index = vocabulary.get(feature)
            if index is not None:
                rows.append(row)
                cols.append(index)
    data = np.ones(len(rows), dtype=np.float64)
    return scipy.sparse.csr_matrix((data, (rows, cols)), shape=(len(features), bias + 1))


def fit(x: scipy.sparse.csr_matrix, y: NDArray[np.int64], l2: float) -> NDArray[np.float64]:
    """Weights (features + 1, labels) of an L2-regularised softmax regression (the bias not penalised)."""
    n, d = x.shape
    k = len(LABELS)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    penalty = np.full((d, 1), l2)
    penalty[-1] = 0.0

    def loss(flat: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        w = flat.reshape(d, k)
        logits = x @ w
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        total = exp.sum(axis=1, keepdims=True)
        log_prob = logits - np.log(total)
        value = -float((onehot * log_prob).sum()) / n + 0.5 * float((penalty * w * w).sum())
        grad = x.T @ (exp / total - onehot) / n + penalty * w
        return value, np.asarray(grad).ravel()

    result = scipy.optimize.minimize(
        loss, np.zeros(d * k), jac=True, method="L-BFGS-B", options={"maxiter": 400, "gtol": 1e-6}
    )
    return np.asarray(result.x).reshape(d, k)


def macro_f1(predicted: NDArray[np.int64], gold: NDArray[np.int64]) -> float:
    """Mean F1 of PER, LOC and ORG."""
    scores = []
    for label in (1, 2, 3):
        tp = int(((predicted == label) & (gold == label)).sum())
        fp = int(((predicted == label) & (gold != label)).sum())
        fn = int(((predicted != label) & (gold == label)).sum())
        scores.append(2 * tp / max(1, 2 * tp + fp + fn))
    return float(np.mean(scores))


def main() -> None:
    """Build the gazetteer, generate the examples, pick the L2 strength, fit, write the model."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Faker picks some values by iterating sets: the same seed gives other sentences under another
        # string-hash seed. Run again with a fixed one, so the model is the same on every machine.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "opsgate.guard.training.ner_train", *sys.argv[1:]])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=30_000)
    parser.add_argument("--output", type=Path, default=MODEL_PATH)
    args = parser.parse_args()

    paragraphs = prose()
    gazetteer = build(paragraphs)
    probe = FastNames({}, np.zeros((1, len(LABELS)), dtype=np.float32), gazetteer)
    train_texts = sentences(args.sentences, TRAIN_SEED) + [(p, []) for p in paragraphs]
    features, labels = examples(probe, train_texts)
    counts = Counter(f for feats in features for f in feats)
    vocabulary = {f: i for i, f in enumerate(sorted(f for f, c in counts.items() if c >= MIN_COUNT))}
    x = matrix(features, vocabulary)
    y = np.asarray(labels, dtype=np.int64)
    val_features, val_labels = examples(probe, sentences(args.sentences // 6, VALIDATION_SEED))
    x_val = matrix(val_features, vocabulary)
    y_val = np.asarray(val_labels, dtype=np.int64)
    print(f"{len(train_texts)} texts, {x.shape[0]} words ({Counter(labels)}), {len(vocabulary)} features")

    best: tuple[float, float, NDArray[np.float64]] | None = None
    for l2 in (3e-6, 1e-5):
        weights = fit(x, y, l2)
        score = macro_f1(np.asarray((x_val @ weights).argmax(axis=1)), y_val)
        print(f"l2={l2:g}: validation macro F1 {score:.4f}")
        if best is None or score > best[0]:
            best = (score, l2, weights)
    assert best is not None
    score, l2, weights = best
    keep = np.flatnonzero(np.abs(weights[:-1]).max(axis=1) >= 5e-3)
    names = sorted(vocabulary, key=vocabulary.__getitem__)
    kept_names = [names[i] for i in keep]
    kept = np.vstack([weights[keep], weights[-1:]]).astype(np.float16)
    words = sorted(gazetteer)
    np.savez_compressed(
        args.output,
        vocabulary=np.frombuffer("\n".join(kept_names).encode("utf-8"), dtype=np.uint8),
        weights=kept,
        gazetteer_words=np.frombuffer("\n".join(words).encode("utf-8"), dtype=np.uint8),
        gazetteer_bits=np.asarray([gazetteer[w] for w in words], dtype=np.uint16),
    )
    report = {"l2": l2, "validation_macro_f1": round(score, 4), "features": len(kept_names), "gazetteer": len(words)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
