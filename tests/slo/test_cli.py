"""``opsgate slo status``, ``opsgate slo report`` and ``opsgate errors`` over a real SQLite log."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import yaml
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.store.record_log import open_store
from tests.conftest import upstream_config
from tests.fake_upstream import FakeUpstream, Script
from tests.slo.conftest import make_record
from tests.support import start_gateway


def write_config(tmp_path: Path) -> Path:
    store = f"sqlite:///{tmp_path}/requests.db"
    opened = open_store(store)
    now = time.time()
    records = [make_record(now - 120 * i) for i in range(40)]
    records.append(make_record(now - 60, status=504, error_type="timeout", error_message="no answer in 30s"))
    opened.write_batch(records)
    opened.close()
    config = {
        "record": {"store": store, "journal_dir": str(tmp_path / "journal")},
        "slo": {
            "objectives": [
                {"name": "avail", "sli": "availability", "target": 0.99, "window": "1d"},
                {"name": "fast", "sli": "latency", "threshold_ms": 500, "target": 0.95, "window": "1d"},
            ]
        },
    }
    path = tmp_path / "opsgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_status_table_and_json(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["slo", "status", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "avail" in result.output and "burn 5m" in result.output and "ticket" in result.output
    result = CliRunner().invoke(cli, ["slo", "status", "--config", str(config), "--json"])
    assert '"budget_remaining"' in result.output


def test_report_markdown_with_plots_and_html(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "report.md"
    result = CliRunner().invoke(cli, ["slo", "report", "--config", str(config), "--since", "1d", "--output", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "| avail | availability |" in text and "![avail-budget.svg](report-avail-budget.svg)" in text
    assert (tmp_path / "report-avail-sli.svg").read_text().startswith("<svg")
    html = CliRunner().invoke(cli, ["slo", "report", "--config", str(config), "--format", "html"])
    assert html.exit_code == 0 and html.output.count("<svg") >= 3 and "<table>" in html.output


def test_errors_command(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["errors", "--config", str(config), "--since", "1h", "--json"])
    assert result.exit_code == 0, result.output
    assert '"message": "no answer in <n>s"' in result.output
    bad = CliRunner().invoke(cli, ["errors", "--config", str(config), "--since", "soon"])
    assert bad.exit_code == 2 and "since" in bad.output


def test_errors_explain_is_a_recorded_gateway_call(tmp_path: Path, upstream_server: FakeUpstream) -> None:
    config = write_config(tmp_path)
    upstream_server.script = Script(content="The upstream timed out; check its latency.")
    gateway = start_gateway(upstream_config(upstream_server.base_url))
    try:
        result = CliRunner().invoke(
            cli,
            [
                "errors",
                "--config",
                str(config),
                "--since",
                "1h",
                "--json",
                "--explain",
                "up",
                "--url",
                gateway.base_url,
            ],
        )
        assert result.exit_code == 0, result.output
        [group] = orjson.loads(result.output)["data"]
        explanation = group["explanation"]
        assert explanation["text"] == "The upstream timed out; check its latency." and explanation["model"] == "up"
        (record,) = gateway.records_for(explanation["request_id"])
        assert record["metadata"] == {"opsgate_purpose": "explain_error_group", "signature": group["signature"]}
        assert "no answer in <n>s" in record["input_text"]
    finally:
        gateway.server.stop()
