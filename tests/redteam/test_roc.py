"""``opsgate redteam roc``: the learned detector's dev ROC and the operating point it ships with."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from opsgate.cli.redteam import redteam
from opsgate.guard.injection_model import shipped_model
from opsgate.guard.training.corpus import CORPUS


def test_roc_prints_the_curve_and_the_shipped_operating_point(tmp_path: Path) -> None:
    out = tmp_path / "roc.json"
    result = CliRunner().invoke(redteam, ["roc", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "| model logit ≥ | false-positive rate | true-positive rate |" in result.output
    data = json.loads(out.read_text())
    assert data["split"] == "dev" and data["rows"] > 2000
    assert data["operating_point"]["model_logit"] == round(shipped_model().calibration.operating_logit, 4)
    points = data["model_logit"]["points"]
    fprs = [p["fpr"] for p in points]
    assert fprs == sorted(fprs) and points[0]["fpr"] == 0.0
    assert 0.9 < data["model_logit"]["auc"] <= 1.0
    # The shipped point's numbers, with their intervals: the goals are recall >= 95%, FP <= 2%.
    assert data["operating_point"]["false_positive_rate"]["rate"] <= 0.02
    assert data["operating_point"]["recall"]["ci95"][0] <= data["operating_point"]["recall"]["rate"]


def test_roc_without_a_corpus_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "none.jsonl"
    result = CliRunner().invoke(redteam, ["roc", "--corpus", str(missing)])
    assert result.exit_code == 2
    assert CORPUS.exists()
