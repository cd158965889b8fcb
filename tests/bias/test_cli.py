"""``opsgate bias`` as CI runs it (a subprocess), through a real gateway in front of a planted upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from opsgate.cli.bias import bias_group
from opsgate.domain.config import parse_config
from tests.bias.planted_upstream import ANSWER, PlantedBias, start_planted
from tests.support import Gateway, ServerThread

SCHEMA = json.loads(files("opsgate.bias").joinpath("data", "report.schema.json").read_text())


def opsgate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("OPSGATE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "opsgate.cli.main", "bias", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def behaviour() -> PlantedBias:
    return PlantedBias()


@pytest.fixture(scope="module")
def upstream(behaviour: PlantedBias) -> Iterator[ServerThread]:
    server = start_planted(behaviour)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(upstream: ServerThread) -> Iterator[Gateway]:
    config = {
        "models": [
            {
                "name": "planted",
                "routing": {"retries": 0},
                "deployments": [
                    {
                        "type": "openai",
                        "base_url": upstream.url + "/v1",
                        "model": "planted-model",
                        "breaker": {"enabled": False},
                    }
                ],
            }
        ]
    }
    gateway = Gateway(parse_config(config))
    gateway.server.start("/readyz")
    yield gateway
    gateway.server.stop()


@pytest.fixture()
def planted(behaviour: PlantedBias) -> Iterator[PlantedBias]:
    """The upstream's behaviour, reset to unbiased and healthy for each test."""
    behaviour.refuse_words, behaviour.status_every, behaviour.fail_first, behaviour.answer = (), None, 0, ANSWER
    behaviour.calls.clear()
    yield behaviour


def audit(gateway: Gateway, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    return audit_url(gateway.base_url, tmp_path, *extra)


def audit_url(url: str, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "report.json"
    result = opsgate(
        "run", "--model", "planted", "--url", url, "--format", "json", "--output", str(out),
        "--concurrency", "4", *extra, cwd=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result, json.loads(out.read_text()) if out.exists() else {}


def test_a_model_that_refuses_one_religion_fails_with_that_dimension_named(
    gateway: Gateway, planted: PlantedBias, tmp_path: Path
) -> None:
    planted.refuse_words = ("Muslim", "Muslims")
    result, report = audit(gateway, tmp_path, "--dimensions", "religion,age")
    assert result.returncode == 1, result.stderr
    jsonschema.validate(report, SCHEMA)
    assert report["passed"] is False and report["failed_dimensions"] == ["religion"]
    failed = [c for c in report["comparisons"] if c["verdict"] == "fail"]
    assert failed and all("muslim" in (c["group_a"], c["group_b"]) for c in failed)
    assert {c["metric"] for c in failed} >= {"refusal"}
    muslim = next(g for g in report["groups"] if g["group"] == "muslim" and g["metric"] == "refusal")
    assert muslim["estimate"] == 1.0 and muslim["n"] == 10
    assert report["requests"] == {"total": 90, "errors": 0, "blocked": 0}
    assert "FAIL" in result.stderr and "religion: refusal gap" in result.stderr
    # Every request reached the upstream through the gateway, tagged as audit traffic in the request log.
    assert len(planted.calls) == 90
    tagged = [r for r in list(gateway.sink.records) if (r.get("metadata") or {}).get("opsgate_purpose") == "bias"]
    assert len(tagged) >= 90
    assert {r["metadata"]["bias_run"] for r in tagged} >= {report["run_id"]}


def test_an_unbiased_model_passes_and_the_markdown_report_says_so(
    gateway: Gateway, planted: PlantedBias, tmp_path: Path
) -> None:
    result = opsgate("run", "-m", "planted", "--url", gateway.base_url, "--dimensions", "gender", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# Bias audit: PASS")
    assert "| refusal | woman vs man | 10 |" in result.stdout
    assert "PASS" in result.stderr


def test_html_report_is_self_contained_and_escapes_model_text(
    gateway: Gateway, planted: PlantedBias, tmp_path: Path
) -> None:
    planted.refuse_words = ("woman", "women")
    planted.answer = "Sure! <script>alert('x')</script> & more"
    out = tmp_path / "report.html"
    result = opsgate(
        "run", "-m", "planted", "--url", gateway.base_url, "--dimensions", "gender", "--format", "html",
        "-o", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "refusal: woman vs man, examples" in page
    assert "http://" not in page.replace(gateway.base_url, "")  # nothing fetched from elsewhere


def test_errors_are_counted_and_fail_the_audit_without_a_traceback(
    gateway: Gateway, planted: PlantedBias, tmp_path: Path
) -> None:
    planted.status_every = 4  # a quarter of the upstream's answers are 500s; no retries anywhere
    result, report = audit(gateway, tmp_path, "--dimensions", "gender", "--retries", "0")
    assert result.returncode == 1, result.stderr
    jsonschema.validate(report, SCHEMA)
    errors = report["requests"]["errors"]
    assert 5 <= errors <= 10 and report["requests"]["total"] == 30
    assert sum(report["errors_by_group"]["gender"].values()) == errors
    assert any("requests errored" in f for f in report["failures"])
    assert report["error_samples"] and report["error_samples"][0].startswith("HTTP 5")
    pairs = next(c for c in report["comparisons"] if c["metric"] == "sentiment")["n_pairs"]
    assert pairs < 10  # a pair with an errored side is left out of the comparison


def test_retries_ride_out_a_short_outage(gateway: Gateway, planted: PlantedBias, tmp_path: Path) -> None:
    planted.fail_first = 3
    result, report = audit(gateway, tmp_path, "--dimensions", "age", "--retries", "3", "--concurrency", "1")
    assert result.returncode == 0, result.stderr
    assert report["requests"]["errors"] == 0 and len(planted.calls) == 30 + 3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dimensions", "caste"], "no dimension 'caste'"),
        (["--threshold-refusal", "nan"], "not a finite number"),
        (["--threshold-sentiment", "inf"], "not a finite number"),
        (["--alpha", "0"], "not a finite number"),
        (["--temperature", "-1"], "not a finite number"),
        (["--samples", "0"], "--samples"),
        (["--samples", "5"], "needs --temperature above 0"),
        (["--samples", "1000", "--temperature", "1"], "at most 200000"),
        (["--concurrency", "0"], "--concurrency"),
        (["--format", "xml"], "--format"),
        (["--output", "/nonexistent-dir/r.json"], "no such directory"),
        (["--model", ""], "--model must be a model alias"),
        (["--model", "a\x00b"], "--model must be a model alias"),
    ],
)
def test_usage_errors_exit_2_before_any_request(args: list[str], expected: str) -> None:
    base = ["run", "--url", "http://127.0.0.1:9/v1"]
    result = CliRunner().invoke(bias_group, [*base, *(["-m", "x"] if "--model" not in args else []), *args])
    assert result.exit_code == 2, (result.output, result.exception)
    assert expected in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"name: x\x00\n", "NUL"),
        (b"\xff\xfe garbage", "not UTF-8"),
        (b"- just\n- a list\n", "must be a mapping"),
        (yaml.safe_dump({"name": "x", "dimensions": {"g": {"groups": {"a": {"s": "A"}, "b": {"s": "B"}}}},
                         "templates": [{"id": "t", "text": "Hello {missing}."}]}).encode(), "no dimension defines"),
        (b"name: x\n# " + b"a" * 1_100_000, "larger than"),
    ],
)  # fmt: skip
def test_a_bad_templates_file_exits_2_listing_the_problem(content: bytes, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "templates.yaml"
    path.write_bytes(content)
    for args in (["run", "-m", "x", "--url", "http://127.0.0.1:9/v1", "--templates", str(path)],
                 ["templates", "--templates", str(path)]):  # fmt: skip
        result = CliRunner().invoke(bias_group, args)
        assert result.exit_code == 2, (result.output, result.exception)
        assert "Invalid templates" in result.stderr and expected in result.stderr


def test_a_bad_templates_file_as_a_user_sees_it(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_bytes(b"name: [unclosed\n")
    result = opsgate("run", "-m", "x", "--url", "http://127.0.0.1:9/v1", "--templates", "t.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "cannot parse" in result.stderr and "Traceback" not in result.stderr


def test_templates_lists_the_starter_set(tmp_path: Path) -> None:
    result = opsgate("templates", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for dimension in ("gender", "ethnicity", "religion", "age", "nationality"):
        assert dimension in result.stdout
    assert "CC0-1.0" in result.stderr


def test_without_url_the_audit_serves_the_config_in_process(
    upstream: ServerThread, planted: PlantedBias, tmp_path: Path
) -> None:
    planted.refuse_words = ("75-year-old", "seventies")
    config = {
        "models": [
            {"name": "planted", "deployments": [{"type": "openai", "base_url": upstream.url + "/v1", "model": "m"}]}
        ],
        "record": {"store": f"sqlite:///{tmp_path}/requests.db", "journal_dir": f"{tmp_path}/journal"},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    result = opsgate(
        "run", "-m", "planted", "--config", "gateway.yaml", "--dimensions", "age", "--format", "json", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["target"] == "in-process gateway" and report["failed_dimensions"] == ["age"]
    assert all("age_75" in (c["group_a"], c["group_b"]) for c in report["comparisons"] if c["verdict"] == "fail")
    assert len(planted.calls) == 30
    (tmp_path / "broken.yaml").write_text("models: 3\n")
    broken = opsgate("run", "-m", "planted", "--config", "broken.yaml", cwd=tmp_path)
    assert broken.returncode == 2 and "Invalid config" in broken.stderr and "requests over" not in broken.stderr


def test_a_gateway_that_is_down_fails_fast_with_every_request_counted(tmp_path: Path) -> None:
    from tests.support import free_port

    result, report = audit_url(f"http://127.0.0.1:{free_port()}/v1", tmp_path, "--dimensions", "religion")
    assert result.returncode == 1, result.stderr
    assert report["requests"] == {"total": 60, "errors": 60, "blocked": 0}
    assert any("Connection" in sample for sample in report["error_samples"]), report["error_samples"]
    assert any("not sent: none of the first 20" in sample for sample in report["error_samples"])
    assert "60 of 60 requests errored" in result.stderr


def test_a_guard_policy_that_blocks_one_group_is_a_refusal_gap(
    upstream: ServerThread, planted: PlantedBias, tmp_path: Path
) -> None:
    # The model is fair; the gateway's own guard blocks prompts that name one religion (HTTP 400
    # input_blocked). The audit measures what a client gets, so that is a refusal gap, not an error.
    config = {
        "models": [
            {"name": "planted", "deployments": [{"type": "openai", "base_url": upstream.url + "/v1", "model": "m"}]}
        ],
        "guard": {
            "enabled": True,
            "policies": [
                {
                    "name": "overblocking",
                    "input": [{"scanner": "banned_terms", "terms": ["Jewish"], "action": "block"}],
                    "output": [],
                }
            ],
        },
    }
    gateway = Gateway(parse_config(config))
    gateway.server.start("/readyz")
    try:
        result, report = audit(gateway, tmp_path, "--dimensions", "religion")
    finally:
        gateway.server.stop()
    assert result.returncode == 1, result.stderr
    assert report["requests"] == {"total": 60, "errors": 0, "blocked": 10}  # both slots say "Jewish"
    blocked = [a for a in report["answers"] if a["outcome"] == "blocked"]
    assert {a["group"] for a in blocked} == {"jewish"} and all(a["status"] == 400 and a["refused"] for a in blocked)
    assert len(planted.calls) == 50  # blocked prompts never reached the model
    jewish = next(g for g in report["groups"] if g["group"] == "jewish" and g["metric"] == "refusal")
    assert jewish["estimate"] == 1.0 and report["failed_dimensions"] == ["religion"]


def test_odd_alias_and_credentials_in_the_url_stay_out_of_the_way(
    upstream: ServerThread, planted: PlantedBias, tmp_path: Path
) -> None:
    url = upstream.url.replace("http://", "http://user:hunter2@") + "/v1"  # straight at the upstream
    out = tmp_path / "r.json"
    alias = "we{ird}[red]"
    result = opsgate("run", "-m", alias, "--url", url, "--dimensions", "age", "-o", str(out), "--format", "json",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["model"] == alias and {c["model"] for c in planted.calls} == {alias}
    assert "hunter2" not in out.read_text() and report["target"] == upstream.url + "/v1"


def test_names_from_a_templates_file_are_text_not_markup(tmp_path: Path) -> None:
    """'[/x]' in a name or licence is printed as written (rich took it for a closing tag: MarkupError)."""
    starter = yaml.safe_load(files("opsgate.bias").joinpath("data/starter.yaml").read_text())
    starter["name"], starter["license"] = "[/x]", "[/]"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(starter))
    result = opsgate("templates", "--templates", "t.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[/x]" in result.stdout and "[/]" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["http://[::1", "ftp://127.0.0.1/v1", "127.0.0.1:8080", "http://:80/v1"])
def test_a_malformed_gateway_url_is_a_usage_error(url: str, tmp_path: Path) -> None:
    result = opsgate("run", "-m", "x", "--url", url, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "--url" in result.stderr
