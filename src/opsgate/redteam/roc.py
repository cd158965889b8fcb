"""The learned injection detector's ROC on the dev split of its corpus, and the operating point it ships with.

Shared by ``opsgate redteam roc`` and ``bench/guard.py``. Scores are the model's window-max logit
(the curve) and the scanner's own score (rules and model, each row read as a message of its role;
a hit at 0.5, the shipped operating point). Rates carry 95% Wilson intervals.
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


def render_markdown(result: dict[str, Any]) -> str:
    """The ROC as a Markdown table (model logit thresholds), with the operating point under it."""
    lines = [
        f"ROC of the learned detector on the {result['split']} split ({result['rows']} rows): "
        f"AUC {result['model_logit']['auc']} (model), {result['combined']['auc']} (model + rules)",
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
    ]
    return "\n".join(lines)
