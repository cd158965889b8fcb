"""Runs over the real gateway (in-process) against a scripted upstream: stored results, failures,
judges, resume after kill -9, compare and gate verdicts on A/A and on a constructed regression."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.evals.store import ANY_TENANT, EvalStore
from opsgate.store.record_log import open_store
from tests.evals.echo_upstream import EchoBehaviour, start_echo
from tests.support import ServerThread, wait_until


@pytest.fixture()
def upstreams() -> Iterator[tuple[EchoBehaviour, EchoBehaviour, ServerThread, ServerThread]]:
    good, bad = EchoBehaviour(), EchoBehaviour(wrong_every=3)
    servers = start_echo(good), start_echo(bad)
    yield good, bad, *servers
    for server in servers:
        server.stop()


def write_config(tmp_path: Path, good: ServerThread, bad: ServerThread, store: str | None = None) -> Path:
    def alias(name: str, server: ServerThread, price: float, own: float | None = None) -> dict[str, Any]:
        deployment: dict[str, Any] = {
            "type": "openai",
            "base_url": server.url + "/v1",
            "model": "m",
            "breaker": {"enabled": False},
        }
        if own is not None:  # the deployment's own price wins over the alias's, as in the record
            deployment["price"] = {"input_per_million": own, "output_per_million": own}
        return {
            "name": name,
            "price": {"input_per_million": price, "output_per_million": price * 2},
            "routing": {"retries": 0},
            "deployments": [deployment],
        }

    url = store or f"sqlite:///{tmp_path}/requests.db"
    open_store(url).close()  # the eval commands never create the store
    config = {
        "models": [alias("good", good, 1.0), alias("bad", bad, 0.5, own=0.4)],
        "record": {"store": url, "journal_dir": str(tmp_path / "journal")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def dataset_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "say.jsonl"
    path.write_bytes(
        b"".join(orjson.dumps({"prompt": f"say: item {i}", "reference": f"item {i}"}) + b"\n" for i in range(n))
    )
    return path


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_run_compare_gate_report(
    tmp_path: Path, upstreams: tuple[EchoBehaviour, EchoBehaviour, ServerThread, ServerThread]
) -> None:
    good, _bad, good_server, bad_server = upstreams
    config = str(write_config(tmp_path, good_server, bad_server))
    assert (
        invoke("eval", "dataset", "import", "say", str(dataset_file(tmp_path, 60)), "--config", config).exit_code == 0
    )
    result = invoke(
        "eval",
        "run",
        "say",
        "-m",
        "good",
        "-m",
        "bad",
        "-m",
        "good",
        "-s",
        "exact",
        "-s",
        "bleu",
        "-s",
        "confidence",
        "--judge",
        "good",
        "--judge-repeats",
        "3",
        "--concurrency",
        "8",
        "--config",
        config,
    )
    assert result.exit_code == 0, result.output
    run_good, run_bad, run_good_again = result.stdout.split()
    store = EvalStore(open_store(f"sqlite:///{tmp_path}/requests.db"))
    items = store.all_items(run_good)
    assert len(items) == 60 and all(i["status"] == "ok" for i in items)
    first = items[0]
    assert first["output"] == "item 0" and first["scores"]["exact"]["passed"] is True
    assert first["latency_ms"] > 0 and first["prompt_tokens"] == 10 and first["cost"] == pytest.approx(20 / 1e6)
    judge = first["scores"]["judge"]
    assert judge["value"] == 4 and judge["details"]["scores"] == [4, 4, 4] and judge["details"]["agreement"] == 1.0
    assert first["scores"]["confidence"]["value"] == pytest.approx(0.904837, rel=1e-5)
    # Each candidate call and each judge repeat went through the gateway, tagged as evaluation.
    assert sum(1 for c in good.calls if c.startswith("You are grading")) == 3 * 60 * 3
    with store.store.connection() as conn:
        roles = dict(
            conn.execute(
                "SELECT json_extract(metadata, '$.eval_role'), count(*) FROM requests "
                "WHERE json_extract(metadata, '$.purpose') = 'eval' GROUP BY 1"
            ).fetchall()
        )
    assert roles == {"candidate": 180, "judge": 540}
    assert store.all_items(run_bad)[0]["cost"] == pytest.approx((10 * 0.4 + 5 * 0.4) / 1e6)
    summary = store.get_run(ANY_TENANT, run_bad)["summary"]  # type: ignore[index]
    assert summary["scores"]["exact"]["pass_rate"] == pytest.approx(40 / 60)

    aa = invoke("eval", "gate", "--baseline", run_good, "--candidate", run_good_again, "--config", config)
    assert aa.exit_code == 0, aa.output  # A/A: no change, the gate passes
    regression = invoke(
        "eval",
        "gate",
        "--baseline",
        run_good,
        "--candidate",
        run_bad,
        "--max-degradation",
        "5%",
        "--config",
        config,
        "--json",
    )
    assert regression.exit_code == 1
    verdict = orjson.loads(regression.stdout)
    exact = next(c for c in verdict["comparisons"] if c["scorer"] == "exact")
    assert exact["test"] == "mcnemar" and exact["verdict"] == "worse" and exact["p_value"] < 0.001
    assert exact["diff"] == pytest.approx(-20 / 60)
    bleu = next(c for c in verdict["comparisons"] if c["scorer"] == "bleu")
    assert bleu["test"] == "wilcoxon" and bleu["ci_high"] < 0
    compared = invoke("eval", "compare", run_good, run_bad, "--config", config)
    assert "significantly worse" in compared.output

    out = tmp_path / "report.md"
    report = invoke("eval", "report", run_good, run_bad, "--config", config, "-o", str(out), "--quality", "exact")
    assert report.exit_code == 0, report.output
    text = out.read_text()
    assert "| good |" in text and "| bad |" in text and (tmp_path / "report.png").stat().st_size > 1000
    rows = orjson.loads(
        invoke("eval", "report", run_good, run_bad, "--format", "json", "--quality", "exact", "--config", config).stdout
    )
    pareto = {r["model"]: r["pareto"] for r in rows["runs"]}
    assert pareto == {"good": True, "bad": True}  # better vs cheaper: both on the front
    html_out = invoke("eval", "report", run_good, "--format", "html", "--config", config).stdout
    assert "data:image/png;base64," in html_out


def test_failed_items_are_recorded_and_the_run_goes_on(
    tmp_path: Path, upstreams: tuple[EchoBehaviour, EchoBehaviour, ServerThread, ServerThread]
) -> None:
    good, _, good_server, bad_server = upstreams
    good.fail_every = 4
    config = str(write_config(tmp_path, good_server, bad_server))
    invoke("eval", "dataset", "import", "say", str(dataset_file(tmp_path, 20)), "--config", config)
    result = invoke("eval", "run", "say", "-m", "good", "-s", "exact", "--config", config)
    assert result.exit_code == 0, result.output
    store = EvalStore(open_store(f"sqlite:///{tmp_path}/requests.db"))
    items = store.all_items(result.stdout.strip())
    failed = [i for i in items if i["status"] == "failed"]
    assert len(items) == 20 and len(failed) == 5
    assert "HTTP 502" in failed[0]["error"] and "upstream broke" in failed[0]["error"]


def test_killed_run_resumes_without_calling_finished_items(
    tmp_path: Path, upstreams: tuple[EchoBehaviour, EchoBehaviour, ServerThread, ServerThread]
) -> None:
    good, _, good_server, bad_server = upstreams
    good.delay = 0.05
    config = str(write_config(tmp_path, good_server, bad_server))
    invoke("eval", "dataset", "import", "say", str(dataset_file(tmp_path, 150)), "--config", config)
    store = EvalStore(open_store(f"sqlite:///{tmp_path}/requests.db"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opsgate.cli.main",
            "eval",
            "run",
            "say",
            "-m",
            "good",
            "-s",
            "exact",
            "--concurrency",
            "2",
            "--config",
            config,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TERM": "dumb"},
    )

    def stored() -> int:
        runs = store.list_runs(ANY_TENANT)
        return len(store.finished_keys(runs[0]["id"])) if runs else 0

    try:
        assert wait_until(lambda: stored() >= 20, timeout=120)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    run_id = store.list_runs(ANY_TENANT)[0]["id"]
    done_before = store.finished_keys(run_id)
    assert 20 <= len(done_before) < 150
    time.sleep(0.2)
    good.calls.clear()
    resumed = invoke("eval", "run", "--resume", run_id, "--config", config, "--concurrency", "8")
    assert resumed.exit_code == 0, resumed.output
    items = store.all_items(run_id)
    assert len(items) == 150 and all(i["status"] == "ok" and i["scores"]["exact"]["passed"] for i in items)
    called_again = {c for c in good.calls} & {f"say: item {int(k)}" for k in done_before}
    assert not called_again
    assert len(good.calls) == 150 - len(done_before)
    assert store.get_run(ANY_TENANT, run_id)["status"] == "completed"  # type: ignore[index]
