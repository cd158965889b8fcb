"""``opsgate redteam roc``: the detector's ROC (leave-one-source-out, or a split in-sample), its operating point."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from opsgate.cli.redteam import redteam
from opsgate.guard.injection_model import shipped_model
from opsgate.guard.training.corpus import CORPUS


def test_roc_by_default_is_the_out_of_fold_curve_over_outside_sources(tmp_path: Path) -> None:
    out = tmp_path / "roc.json"
    result = CliRunner().invoke(redteam, ["roc", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "leave-one-source-out" in result.output
    data = json.loads(out.read_text())
    loso = json.loads(CORPUS.with_name("loso.json").read_text())
    assert data["split"] == "loso"
    # The shipped threshold is the one LOSO chose, and the rates are the report's, not in-sample ones.
    assert data["operating_point"]["model_logit"] == round(shipped_model().calibration.operating_logit, 4)
    assert data["operating_point"]["recall"] == loso["pooled_outside"]["scanner"]["recall"]
    fprs = [p["fpr"] for p in data["model_logit"]["points"]]
    assert fprs == sorted(fprs)
    assert abs(data["model_logit"]["auc"] - loso["auc_outside"]) < 0.002
    assert data["operating_point"]["false_positive_rate_prompts"]["rate"] <= 0.02


def test_roc_of_a_split_is_in_sample_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "roc.json"
    result = CliRunner().invoke(redteam, ["roc", "--split", "dev", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "| model logit ≥ | false-positive rate | true-positive rate |" in result.output
    assert "in-sample" in result.output
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


def test_roc_of_a_corpus_its_report_does_not_match_is_a_usage_error(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(CORPUS.read_text().splitlines()[0] + "\n")
    (tmp_path / "loso.json").write_text(CORPUS.with_name("loso.json").read_text())
    result = CliRunner().invoke(redteam, ["roc", "--corpus", str(corpus)])
    assert result.exit_code == 2
    assert "cannot read the corpus or its report" in result.output
    (tmp_path / "loso.json").write_text("not json")
    result = CliRunner().invoke(redteam, ["roc", "--corpus", str(corpus)])
    assert result.exit_code == 2, result.output
