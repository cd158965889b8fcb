"""Does the static-embedding head generalise? Leave-one-source-out, as ``loso`` measures the model.

    nice -n 10 .venv/bin/python -m opsgate.guard.training.embed_loso     # ~2-5 min: /tmp/opsgate-embed-loso.json

Same groups (``loso.group_of``), same folds, same operating-point rule (``train.operating_logit``
on the outside groups' out-of-fold logits). Detectors: ``model`` (the existing learned model; its
out-of-fold logits are read from ``loso.json`` when they match the corpus, else recomputed),
``embed`` (the embedding head alone), ``sum`` (the two logits added: nothing fitted), ``max`` (the
higher of the two logits, each minus its own operating logit) and ``stacked`` (a logistic regression
on the two logits, itself fitted leave-one-group-out on the other groups' out-of-fold logits).
Each is reported at the operating point and at a pooled outside false-positive rate of 1% and 2%.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from opsgate.guard.training.corpus import CORPUS
from opsgate.guard.training.embed_distil import TABLE
from opsgate.guard.training.embed_train import HIDDEN, L2, featurise, shipped_table, train_head
from opsgate.guard.training.loso import WRITTEN_HERE, group_of, out_of_fold
from opsgate.guard.training.loso import featurise as model_featurise
from opsgate.guard.training.train import L2 as MODEL_L2
from opsgate.guard.training.train import Row, _is_document, fit, load, operating_logit

Scores = Sequence[float]


def embed_out_of_fold(rows: Sequence[Row], l2: float, hidden: int) -> list[float]:
    """Each row's embedding-head logit from the head trained without its group."""
    logits = [0.0] * len(rows)
    for group in sorted({group_of(str(r["source"])) for r in rows}):
        head = train_head([r for r in rows if group_of(str(r["source"])) != group], l2, hidden)
        for index, row in enumerate(rows):
            if group_of(str(row["source"])) == group:
                logits[index] = float(head.logits(row["embed"]).max())
        print(f"  embed fold {group}", flush=True)
    return logits


def stacked_out_of_fold(rows: Sequence[Row], a: Scores, b: Scores) -> list[float]:
    """A logistic regression on (a, b), fitted per group on every other group's out-of-fold logits."""
    x = np.column_stack([a, b]).astype(np.float64)
    y = np.array([float(r["label"]) for r in rows])
    groups = np.array([group_of(str(r["source"])) for r in rows])
    out = np.zeros(len(rows))
    for group in sorted(set(groups)):
        inside = groups == group
        weights, bias = fit(x[~inside], y[~inside], 1e-3)
        out[inside] = x[inside] @ weights + bias
    return out.tolist()


def _wilson(hits: int, total: int) -> dict[str, Any]:
    if not total:
        return {"hits": 0, "total": 0}
    ci = scipy.stats.binomtest(hits, total).proportion_ci(method="wilson")
    return {
        "hits": hits,
        "total": total,
        "rate": round(hits / total, 4),
        "ci95": [round(float(ci.low), 4), round(float(ci.high), 4)],
    }


def pooled_cut(rows: Sequence[Row], scores: Scores, max_fpr: float) -> float:
    """The lowest cut with at most ``max_fpr`` of all the benign rows at or above it."""
    benign = np.sort([s for r, s in zip(rows, scores, strict=True) if not r["label"]])[::-1]
    allowed = math.floor(max_fpr * len(benign))
    return float(benign[allowed]) + 1e-6 if allowed < len(benign) else float(benign[-1])


def at_cut(rows: Sequence[Row], scores: Scores, cut: float) -> dict[str, Any]:
    """Recall, FPR (prompts, documents) and per-group recall of ``scores >= cut`` on ``rows``."""
    hit = [s >= cut for s in scores]

    def count(keep: Any) -> dict[str, Any]:
        chosen = [h for h, r in zip(hit, rows, strict=True) if keep(r)]
        return _wilson(sum(chosen), len(chosen))

    by_group = {
        g: count(lambda r, g=g: r["label"] and group_of(str(r["source"])) == g)
        for g in sorted({group_of(str(r["source"])) for r in rows if r["label"]})
    }
    return {
        "cut": round(cut, 4),
        "recall": count(lambda r: r["label"]),
        "fpr": count(lambda r: not r["label"]),
        "fpr_prompts": count(lambda r: not r["label"] and not _is_document(r)),
        "fpr_documents": count(lambda r: not r["label"] and _is_document(r)),
        "recall_by_group": by_group,
    }


def _auc(rows: Sequence[Row], scores: Scores) -> float:
    labels = np.array([bool(r["label"]) for r in rows])
    ranks = scipy.stats.rankdata(scores)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    return round(float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives)), 4)


def report(rows: Sequence[Row], scores: Scores, max_fpr: float) -> dict[str, Any]:
    """One detector on the outside groups: at the operating point, and at pooled FPR 1% and 2%."""
    outside = [i for i, r in enumerate(rows) if group_of(str(r["source"])) != WRITTEN_HERE]
    orows = [rows[i] for i in outside]
    oscores = [scores[i] for i in outside]
    cut = operating_logit(orows, oscores, max_fpr)
    return {
        "operating_logit": cut,
        "auc_outside": _auc(orows, oscores),
        "operating_point": at_cut(orows, oscores, cut),
        "pooled_fpr_1pct": at_cut(orows, oscores, pooled_cut(orows, oscores, 0.01)),
        "pooled_fpr_2pct": at_cut(orows, oscores, pooled_cut(orows, oscores, 0.02)),
    }


def model_logits(rows: list[Row], path: Path, recompute: bool) -> list[float]:
    """The existing model's out-of-fold logits: ``loso.json``'s when they fit the corpus, else recomputed."""
    if not recompute and path.exists():
        stored = json.loads(path.read_text())
        logits: list[float] = stored.get("out_of_fold_logits", [])
        if len(logits) == len(rows) and stored["config"]["l2"] == MODEL_L2:
            return logits
    model_featurise(rows)
    return out_of_fold(rows, MODEL_L2)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--model-loso", type=Path, default=CORPUS.with_name("loso.json"))
    parser.add_argument("--recompute-model", action="store_true")
    parser.add_argument("--l2", type=float, default=L2)
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--max-fpr", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=Path("/tmp/opsgate-embed-loso.json"))
    args = parser.parse_args()
    rows = load(args.corpus)
    table = shipped_table(args.table)[0]
    featurise(rows, table)
    za = model_logits(rows, args.model_loso, args.recompute_model)
    zb = embed_out_of_fold(rows, args.l2, args.hidden)
    result: dict[str, Any] = {"config": {"l2": args.l2, "hidden": args.hidden, "max_fpr": args.max_fpr}}
    result["model"] = report(rows, za, args.max_fpr)
    result["embed"] = report(rows, zb, args.max_fpr)
    ca, cb = result["model"]["operating_logit"], result["embed"]["operating_logit"]
    combos = {
        "sum": [a + b for a, b in zip(za, zb, strict=True)],
        "max": [max(a - ca, b - cb) for a, b in zip(za, zb, strict=True)],
        "stacked": stacked_out_of_fold(rows, za, zb),
    }
    for name, scores in combos.items():
        result[name] = report(rows, scores, args.max_fpr)
    result["out_of_fold"] = {"model": [round(z, 4) for z in za], "embed": [round(z, 4) for z in zb]}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name in ("model", "embed", *combos):
        line = [f"{name:8s} auc {result[name]['auc_outside']}"]
        for point in ("operating_point", "pooled_fpr_1pct", "pooled_fpr_2pct"):
            r = result[name][point]
            line.append(
                f"{point}: recall {r['recall']['rate']:.3f} {r['recall']['ci95']} "
                f"fp prompts {r['fpr_prompts']['rate']:.3f} docs {r['fpr_documents']['rate']:.4f}"
            )
        print(" | ".join(line))


if __name__ == "__main__":
    main()
