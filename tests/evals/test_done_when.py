"""The issue's "done when": a dataset built from recorded traffic, evaluated against the embedded
SmolLM2 and a second deployment, judged by a repeated judge (SmolLM2 itself: fine for a test, far
too weak for real decisions), with a pairwise comparison in both orders."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.domain.config import parse_config
from opsgate.evals.store import ANY_TENANT, EvalStore
from opsgate.store.record_log import open_store
from tests.evals.echo_upstream import EchoBehaviour, start_echo
from tests.support import Gateway


@pytest.mark.timeout(900)
def test_traffic_to_dataset_to_two_models_with_a_repeated_judge(tmp_path: Path) -> None:
    echo = start_echo(EchoBehaviour())
    config = {
        "models": [
            {
                "name": "smollm2",
                "deployments": [{"type": "llama_cpp", "n_ctx": 2048, "max_queue": 64, "queue_timeout": 600, "seed": 1}],
            },
            {"name": "second", "deployments": [{"type": "openai", "base_url": echo.url + "/v1", "model": "m"}]},
            {"name": "all-minilm-l6-v2", "deployments": [{"type": "sentence_embedding"}]},
        ],
        "record": {"store": f"sqlite:///{tmp_path}/requests.db", "journal_dir": str(tmp_path / "journal")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        # 1. Production traffic, recorded by the gateway (one with an email, one duplicate).
        gateway = Gateway(parse_config(config), keep_record_config=True)
        gateway.server.start("/readyz", timeout=300)
        try:
            # No lone names: the scrubber reads the prompt and the answer apart, and a lone "Paris" (a
            # first name too) is a <PERSON> as an answer but not after "say:", so the echo's answer
            # would no longer repeat its reference.
            for text in ("say: green", "say: blue", "say: green", "say: write to ann@example.org"):
                body = {"model": "second", "messages": [{"role": "user", "content": text}]}
                assert httpx.post(gateway.base_url + "/chat/completions", json=body, timeout=60).status_code == 200
            assert gateway.app.state.gateway.record_log.writer.flush()
        finally:
            gateway.server.stop()
        runner = CliRunner()
        built = runner.invoke(cli, ["eval", "dataset", "from-logs", "traffic", "--since", "1h", "--config", str(path)])
        assert built.exit_code == 0, built.output
        store = EvalStore(open_store(config["record"]["store"]))
        version = store.find_dataset(ANY_TENANT, "traffic")
        assert version is not None and version.items == 3  # the duplicate is gone
        texts = [i.messages[0]["content"] for i in store.dataset_items(version.id) if i.messages]
        assert "say: write to <EMAIL>" in texts and all("ann@" not in t for t in texts)

        # 2. Both models, scored, with SmolLM2 as a repeated judge and a pairwise comparison.
        result = runner.invoke(
            cli,
            [
                "eval",
                "run",
                "traffic",
                "-m",
                "second",
                "-m",
                "smollm2",
                "-s",
                "rouge_l",
                "-s",
                "refusal",
                "-s",
                "embedding",
                "--judge",
                "smollm2",
                "--judge-repeats",
                "3",
                "--pairwise",
                "--max-tokens",
                "24",
                "--concurrency",
                "2",
                "--timeout",
                "600",
                "--config",
                str(path),
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        second_run, smol_run = result.stdout.split()
        for run in (second_run, smol_run):
            items = store.all_items(run)
            assert len(items) == 3
            judged = [i for i in items if i["status"] == "ok"]
            assert judged, [i["error"] for i in items]
            for item in judged:
                judge = item["scores"]["judge"]["details"]
                assert (
                    len(judge["scores"]) + judge["failed_repeats"] == 3 and 1 <= item["scores"]["judge"]["value"] <= 5
                )
                assert 0 <= judge["agreement"] <= 1 and judge["spread"] >= 0
        smol = store.all_items(smol_run)
        assert any(i["scores"].get("pairwise") for i in smol if i["status"] == "ok")
        assert all(i["output"] for i in smol if i["status"] == "ok")  # the embedded model answered
        summary = store.get_run(ANY_TENANT, second_run)["summary"]  # type: ignore[index]
        assert summary["scores"]["rouge_l"]["mean"] == pytest.approx(1.0)  # the echo repeats its references
        assert summary["scores"]["embedding"]["mean"] == pytest.approx(1.0, abs=1e-5)  # embedded MiniLM, same text
    finally:
        echo.stop()
