"""How the injection detector does on the corpus: per split, source, language and kind, and the dev ROC.

Three detectors are scored on every row: the signal rules alone, the learned model alone (on the
text as written), and the scanner itself (rules and model on the text and its decoded variants,
plus the agent-directed signals for tool messages; a hit at 0.5). Rates
carry 95% Wilson intervals (scipy, through ``opsgate.redteam.stats``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.progress import track

from opsgate.domain.guard_config import InjectionScannerConfig
from opsgate.guard.base import ScanContext
from opsgate.guard.injection import InjectionScanner, injection_score
from opsgate.guard.injection_model import InjectionModel
from opsgate.redteam.stats import wilson_interval

Row = dict[str, Any]


def rate(hits: int, total: int) -> dict[str, Any]:
    """k of n with its 95% Wilson interval."""
    low, high = wilson_interval(hits, total) if total else (0.0, 1.0)
    return {
        "hits": hits,
        "total": total,
        "rate": round(hits / total, 4) if total else None,
        "ci95": [round(low, 4), round(high, 4)],
    }


_FPR_STEPS = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
_TPR_STEPS = (0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)


def roc(scores: Sequence[float], labels: Sequence[int]) -> dict[str, Any]:
    """ROC points (threshold, false-positive rate, true-positive rate) and the AUC.

    The points are where the curve reaches set false-positive rates (dense near zero, where an
    operating point lives) and set true-positive rates.
    """
    s = np.array(scores)
    y = np.array(labels, dtype=bool)
    order = np.argsort(-s, kind="stable")
    tps = np.cumsum(y[order])
    fps = np.cumsum(~y[order])
    tpr = np.concatenate([[0.0], tps / max(1, y.sum())])
    fpr = np.concatenate([[0.0], fps / max(1, (~y).sum())])
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    last = len(order) - 1
    picks = {min(last, int(np.searchsorted(fpr[1:], step, "right")) - 1) for step in _FPR_STEPS}
    picks |= {min(last, int(np.searchsorted(tpr[1:], step, "left"))) for step in _TPR_STEPS}
    picks = {max(0, i) for i in picks}
    table = [
        {
            "threshold": round(float(s[order[i]]), 4),
            "fpr": round(float(fpr[i + 1]), 4),
            "tpr": round(float(tpr[i + 1]), 4),
        }
        for i in sorted(picks)
    ]
    return {"auc": round(auc, 4), "points": table}


def score_rows(rows: Sequence[Row], model: InjectionModel) -> None:
    """Add ``rules``, ``model`` (the raw text only), ``model_logit`` and ``combined`` (the scanner itself,
    reading the row as a message of its role) to each row."""
    scanner = InjectionScanner(InjectionScannerConfig(scanner="prompt_injection"))
    scanner.model = model
    for row in track(rows, description="scoring"):
        rules, _ = injection_score(row["text"])
        logit = model.logit(row["text"])
        row["rules"], row["model"], row["model_logit"] = rules, model.calibration.decision(logit), logit
        row["combined"] = scanner.scan(row["text"], ScanContext("input", role=row["role"])).score


def _group(rows: Sequence[Row], key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[str(row[key])].append(row)
    for name, members in sorted(groups.items()):
        attacks = [r for r in members if r["label"]]
        benign = [r for r in members if not r["label"]]
        entry: dict[str, Any] = {}
        for detector in ("combined", "rules", "model"):
            if attacks:
                entry.setdefault("recall", {})[detector] = rate(sum(r[detector] >= 0.5 for r in attacks), len(attacks))
            if benign:
                entry.setdefault("fpr", {})[detector] = rate(sum(r[detector] >= 0.5 for r in benign), len(benign))
        out[name] = entry
    return out


def report(rows: list[Row], model: InjectionModel, meta: dict[str, Any]) -> dict[str, Any]:
    """The full report: summary per split, per source / language / kind, and the dev ROC."""
    score_rows(rows, model)
    by_split = _group(rows, "split")
    dev = [r for r in rows if r["split"] == "dev"]
    cal = model.calibration
    result: dict[str, Any] = {
        "meta": {**meta, "calibration": {"a": cal.a, "b": cal.b, "operating_logit": cal.operating_logit}},
        "summary": by_split,
        "by_source": {
            split: _group([r for r in rows if r["split"] == split], "source") for split in ("dev", "heldout")
        },
        "by_language": {
            split: _group([r for r in rows if r["split"] == split and r["label"]], "lang")
            for split in ("dev", "heldout", "train")
        },
        "by_kind_heldout": _group([r for r in rows if r["split"] == "heldout"], "kind"),
        "dev_roc": {
            "model_logit": roc([r["model_logit"] for r in dev], [r["label"] for r in dev]),
            "combined": roc([r["combined"] for r in dev], [r["label"] for r in dev]),
            "rules": roc([r["rules"] for r in dev], [r["label"] for r in dev]),
            "operating_point": {
                "model_logit": round(cal.operating_logit, 4),
                "combined_threshold": 0.5,
                "dev_recall_combined": by_split.get("dev", {}).get("recall", {}).get("combined"),
                "dev_fpr_combined": by_split.get("dev", {}).get("fpr", {}).get("combined"),
            },
        },
        "misses_heldout": [
            {"source": r["source"], "kind": r["kind"], "lang": r["lang"], "text": r["text"][:160]}
            for r in rows
            if r["split"] == "heldout" and r["label"] and r["combined"] < 0.5
        ][:40],
        "false_positives_dev_heldout": [
            {"source": r["source"], "split": r["split"], "text": r["text"][:160]}
            for r in rows
            if r["split"] in ("dev", "heldout") and not r["label"] and r["combined"] >= 0.5
        ][:40],
    }
    return result
