"""The learned injection detector's ROC and the operating point it ships with.

Shared by ``opsgate redteam roc`` and ``bench/guard.py``. The default, ``loso``, is the honest curve:
each outside source's rows scored by the model trained without that source (the out-of-fold logits
of ``data/guard/injection/loso.json``), over the sources not written here; the operating point and
the scanner's rates there come from the same report. A corpus split (``dev`` …) scores the shipped
model, which trains on every row: in-sample, a check of the weights, not of generalisation. Scores
are the model's window-max logit (the curve) and the scanner's own score (rules and model, each row
read as a message of its role; a hit at 0.5). Rates carry 95% Wilson intervals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opsgate.domain.guard_config import InjectionScannerConfig
from opsgate.guard.base import ScanContext
from opsgate.guard.injection import InjectionScanner
from opsgate.guard.injection_model import InjectionModel, shipped_model
from opsgate.guard.training.evaluate import rate, roc


def detector_roc(corpus: Path, split: str = "dev", model: InjectionModel | None = None) -> dict[str, Any]:
    """ROC points and AUC of the model's logit on ``split``, and recall / FP rate at the operating point."""
    model = model or shipped_model()
    rows = [json.loads(line) for line in corpus.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["split"] == split]
    if not rows:
        raise ValueError(f"no rows of split {split!r} in {corpus}")
    labels = [int(r["label"]) for r in rows]
    logits = [model.logit(r["text"]) for r in rows]
    scanner = InjectionScanner(InjectionScannerConfig(scanner="prompt_injection"))
    scanner.model = model
    combined = [scanner.scan(r["text"], ScanContext("input", role=r["role"])).score for r in rows]
    attacks = [c for c, y in zip(combined, labels, strict=True) if y]
    benign = [c for c, y in zip(combined, labels, strict=True) if not y]
    return {
        "split": split,
        "rows": len(rows),
        "model_logit": roc(logits, labels),
        "combined": roc(combined, labels),
        "operating_point": {
            "model_logit": round(model.calibration.operating_logit, 4),
            "combined_threshold": 0.5,
            "recall": rate(sum(c >= 0.5 for c in attacks), len(attacks)),
            "false_positive_rate": rate(sum(c >= 0.5 for c in benign), len(benign)),
        },
    }


def loso_roc(corpus: Path, report: Path) -> dict[str, Any]:
    """ROC of the out-of-fold logits over the outside sources, with the LOSO operating point and rates."""
    from opsgate.guard.training.loso import WRITTEN_HERE, group_of

    rows = [json.loads(line) for line in corpus.read_text().splitlines() if line.strip()]
    loso = json.loads(report.read_text())
    logits = loso["out_of_fold_logits"]
    if len(logits) != len(rows):
        raise ValueError(f"{report} scores {len(logits)} rows, {corpus} has {len(rows)}: re-run the training")
    outside = [
        (logit, int(r["label"])) for logit, r in zip(logits, rows, strict=True) if group_of(r["source"]) != WRITTEN_HERE
    ]
    pooled = loso["pooled_outside"]
    return {
        "split": "loso",
        "rows": len(outside),
        "model_logit": roc([logit for logit, _ in outside], [label for _, label in outside]),
        "operating_point": {
            "model_logit": loso["operating_logit"],
            "combined_threshold": 0.5,
            "recall": pooled["scanner"]["recall"],
            "false_positive_rate": pooled["scanner"]["fpr"],
            "false_positive_rate_prompts": pooled["scanner"]["fpr_prompts"],
        },
    }


def render_markdown(result: dict[str, Any]) -> str:
    """The ROC as a Markdown table (model logit thresholds), with the operating point under it."""
    if result["split"] == "loso":
        title = (
            f"ROC of the learned detector, leave-one-source-out over the outside sources ({result['rows']} rows, "
            f"each scored by the model trained without its source): AUC {result['model_logit']['auc']} (model)"
        )
    else:
        title = (
            f"ROC of the shipped detector on the {result['split']} split ({result['rows']} rows; in-sample: it "
            f"trains on every row): AUC {result['model_logit']['auc']} (model), "
            f"{result['combined']['auc']} (model + rules)"
        )
    lines = [
        title,
        "",
        "| model logit ≥ | false-positive rate | true-positive rate |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {p['threshold']} | {p['fpr']:.2%} | {p['tpr']:.2%} |" for p in result["model_logit"]["points"]]
    point = result["operating_point"]
    recall, fpr = point["recall"], point["false_positive_rate"]
    lines += [
        "",
        f"Operating point: model logit {point['model_logit']} (decision score 0.5), combined with the rules at 0.5: "
        f"recall {recall['rate']:.1%} ({recall['hits']}/{recall['total']}, 95% CI {recall['ci95'][0]:.1%}-"
        f"{recall['ci95'][1]:.1%}), false positives {fpr['rate']:.2%} ({fpr['hits']}/{fpr['total']}, 95% CI "
        f"{fpr['ci95'][0]:.2%}-{fpr['ci95'][1]:.2%}).",
        "(The rules' part is as they were when the LOSO report was computed; bench/rules_loso.py scores the "
        "current rules against the same out-of-fold logits.)",
    ]
    return "\n".join(lines)
