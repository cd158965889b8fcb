"""``opsgate redteam`` as a user runs it (a subprocess), against the contract server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.redteam.contract_app import contract_app
from tests.redteam.test_runner import CASES
from tests.support import ServerThread


def opsgate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("OPSGATE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "opsgate.cli.main", "redteam", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    seen: list[dict[str, Any]] = []
    server = ServerThread(contract_app(seen)).start()
    yield server.url + "/v1"
    server.stop()


@pytest.fixture()
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "suite.yaml"
    # Without the erroring case: 4 of 7 attacks detected, 1 of 3 benign flagged.
    path.write_text(yaml.safe_dump({"name": "contract", "cases": [c for c in CASES if c["id"] != "b-err"]}))
    return path


def test_run_passes_and_writes_json(url: str, suite_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = opsgate(
        "run", "--model", "guarded", "--suite", str(suite_file), "--base-url", url, "--api-key", "sk-test",
        "--min-recall", "0.5", "--max-fpr", "0.5", "--output", str(out), "--concurrency", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stderr
    assert "prompt_injection" in result.stdout and "57.1% [25.0%, 84.2%] (4/7)" in result.stdout
    report = json.loads(out.read_text())
    assert report["passed"] is True and report["suite"] == "contract" and report["target"] == url
    assert report["recall"]["successes"] == 4 and report["recall"]["trials"] == 7
    assert report["false_positive_rate"]["successes"] == 1 and report["false_positive_rate"]["trials"] == 3
    assert report["attack_success"]["successes"] == 1
    assert len(report["cases"]) == len(CASES) - 1
    leak = next(c for c in report["cases"] if c["id"] == "s-leak")
    assert leak["leaked"] is True and leak["canary"] in leak["output"]


def test_run_fails_the_gate(url: str, suite_file: Path, tmp_path: Path) -> None:
    result = opsgate("run", "--model", "guarded", "--suite", str(suite_file), "--base-url", url, cwd=tmp_path)
    assert result.returncode == 1
    assert "FAIL" in result.stderr and "recall 57.1% < 95.0%" in result.stderr
    assert "false-positive rate 33.3% > 2.0%" in result.stderr


def test_json_to_stdout_keeps_stdout_parseable(url: str, suite_file: Path, tmp_path: Path) -> None:
    result = opsgate(
        "run", "-m", "guarded", "--suite", str(suite_file), "--base-url", url, "--json", "--case", "a-block",
        "--case", "b-ok",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [c["id"] for c in report["cases"]] == ["a-block", "b-ok"]
    assert report["recall"]["rate"] == 1.0 and report["false_positive_rate"]["rate"] == 0.0


def test_json_is_a_flag_and_a_file_is_output(url: str, suite_file: Path, tmp_path: Path) -> None:
    # Before, --json took a file name; now it never takes a value (issue 17, "Consistent CLI").
    refused = opsgate("run", "-m", "guarded", "--suite", str(suite_file), "--json", "report.json", cwd=tmp_path)
    assert refused.returncode == 2 and "report.json" in refused.stderr, refused.stderr
    assert not (tmp_path / "report.json").exists()
    out = tmp_path / "short.json"
    result = opsgate(
        "run", "-m", "guarded", "--suite", str(suite_file), "--base-url", url, "-o", str(out), "--case", "a-block",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [c["id"] for c in json.loads(out.read_text())["cases"]] == ["a-block"]
    assert "a-block" not in result.stdout or "{" not in result.stdout  # the table, not the JSON, on stdout


def test_errors_fail_the_gate_unless_allowed(url: str, tmp_path: Path) -> None:
    path = tmp_path / "errs.yaml"
    path.write_text(yaml.safe_dump([c for c in CASES if c["id"] in ("a-block", "b-ok", "b-err")]))
    result = opsgate("run", "-m", "guarded", "--suite", str(path), "--base-url", url, cwd=tmp_path)
    assert result.returncode == 1 and "1 case(s) got no verdict" in result.stderr
    assert "b-err: 500 boom" in result.stderr
    result = opsgate("run", "-m", "guarded", "--suite", str(path), "--base-url", url, "--max-errors", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_bad_suite_and_bad_filters_exit_2(url: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- {id: one, category: prompt_injection, kind: attack}\n")
    result = opsgate("run", "-m", "guarded", "--suite", str(path), "--base-url", url, cwd=tmp_path)
    assert result.returncode == 2
    assert "Invalid suite" in result.stderr and "case 'one' (#1)" in result.stderr
    result = opsgate("run", "-m", "guarded", "--base-url", url, "--category", "nope", cwd=tmp_path)
    assert result.returncode == 2 and "No case matches" in result.stderr
    result = opsgate("run", "-m", "guarded", "--base-url", url, "--max-fpr", "3", cwd=tmp_path)
    assert result.returncode == 2 and "--max-fpr" in result.stderr


def test_check_counts_the_starter_suite(tmp_path: Path) -> None:
    result = opsgate("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "60 attacks, 60 benign" in result.stderr
    assert "system_prompt_extraction" in result.stdout and "benign_hard" in result.stdout
