"""``opsgate logs`` and ``opsgate usage`` run as a user runs them (subprocesses), on a log a real gateway filled."""

from __future__ import annotations

import csv
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from opsgate.domain.config import load_config, parse_config
from opsgate.store.record_log import RecordLog
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway

OPSGATE = [sys.executable, "-m", "opsgate.cli.main"]


@dataclass
class FilledLog:
    """A config file whose request log a gateway has filled, and what each request sent."""

    config: Path
    sent: dict[str, dict[str, Any]]

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*OPSGATE, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
            env={**os.environ, "COLUMNS": "250", **(env or {})},  # wide enough that table ids are never folded
            cwd=self.config.parent,
        )

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.returncode == 0, result.stderr
        return orjson.loads(result.stdout)

    def ids(self, **match: Any) -> set[str]:
        return {rid for rid, body in self.sent.items() if all(body.get(k) == v for k, v in match.items())}


def fill_log(directory: Path, upstream: FakeUpstream, requests: list[dict[str, Any]]) -> FilledLog:
    """Write a config with its request log in ``directory``, serve ``requests`` through it, stop."""
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "real-model"}
    data = {
        "models": [
            {
                "name": "alpha",
                "price": {"input_per_million": 1.0, "output_per_million": 2.0},
                "deployments": [deployment],
            },
            {"name": "beta", "deployments": [deployment]},
        ],
        "record": {"store": f"sqlite:///{directory}/requests.db", "journal_dir": f"{directory}/journal"},
    }
    config = directory / "opsgate.yaml"
    config.write_text(yaml.safe_dump(data))
    gateway = Gateway(parse_config(data), keep_record_config=True)
    gateway.server.start("/readyz")
    sent: dict[str, dict[str, Any]] = {}
    try:
        for request in requests:
            upstream.script = Script(content=request.pop("answer", "ok"))
            response = httpx.post(gateway.base_url + "/chat/completions", json=request, timeout=30)
            sent[response.headers["x-request-id"]] = {**request, "status": response.status_code}
        record_log = gateway.app.state.gateway.record_log
        assert record_log.writer.flush()
    finally:
        gateway.server.stop()
    return FilledLog(config, sent)


def chat(model: str, text: str, user: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "user": user, **extra}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeUpstream) -> FilledLog:
    return fill_log(
        tmp_path_factory.mktemp("logs-cli"),
        upstream_server,
        [
            chat("alpha", "Grüße aus Berlin", "ana"),
            chat("alpha", "Wetter in 東京 heute", "ana", answer="Kirschblüte im Park"),
            chat("beta", "apples and oranges", "bob", metadata={"team": "fruit"}),
            chat("beta", "pears only", "bob"),
            chat("nope", "a model that does not exist", "carl"),
        ],
    )


# -- search, show, tail ------------------------------------------------------------------------------------


def test_search_by_text_and_filters(filled: FilledLog) -> None:
    def found(*args: str) -> set[str]:
        return {row["id"] for row in filled.json("logs", "search", *args)["data"]}

    berlin = {rid for rid, body in filled.sent.items() if "Berlin" in body["messages"][0]["content"]}
    tokyo = {rid for rid, body in filled.sent.items() if "東京" in body["messages"][0]["content"]}
    assert found("Grüße") == berlin
    assert found("東京") == tokyo and found("Kirschblüte") == tokyo  # input and output
    assert found("--model", "beta") == filled.ids(model="beta")
    assert found("--user", "ana", "--since", "1h") == filled.ids(user="ana")
    assert found("--status", "404") == filled.ids(model="nope")
    assert found("--status", "5xx") == set()
    assert found("--tag", "team=fruit") == {r for r, b in filled.sent.items() if b.get("metadata")}
    assert found("--tag", "team=fruit", "--tag", "env=prod") == set()
    assert found() == set(filled.sent)


def test_search_pages_with_the_cursor(filled: FilledLog) -> None:
    first = filled.json("logs", "search", "--limit", "3")
    assert len(first["data"]) == 3 and first["next_cursor"]
    second = filled.json("logs", "search", "--limit", "3", "--cursor", first["next_cursor"])
    assert second["next_cursor"] is None
    assert {r["id"] for r in first["data"] + second["data"]} == set(filled.sent)


def test_search_prints_a_table(filled: FilledLog) -> None:
    result = filled.run("logs", "search", "--model", "beta")
    assert result.returncode == 0, result.stderr
    for rid in filled.ids(model="beta"):
        assert rid in result.stdout
    assert "apples and oranges" in result.stdout and "bob" in result.stdout
    assert "no matching records" in filled.run("logs", "search", "nothing-like-this").stderr


def test_show_prints_the_record_with_payloads(filled: FilledLog) -> None:
    (rid,) = {rid for rid, body in filled.sent.items() if "東京" in body["messages"][0]["content"]}
    result = filled.run("logs", "show", rid)
    assert result.returncode == 0, result.stderr
    record = orjson.loads(result.stdout)
    assert record["request"]["messages"] == [{"role": "user", "content": "Wetter in 東京 heute"}]
    assert record["response"]["content"] == "Kirschblüte im Park"
    assert "東京" in result.stdout  # not escaped
    missing = filled.run("logs", "show", "no-such-id")
    assert missing.returncode == 1 and "no record with id no-such-id" in missing.stderr


def test_tail_prints_the_newest_oldest_first(filled: FilledLog) -> None:
    result = filled.run("logs", "tail", "-n", "2", "--json")
    assert result.returncode == 0, result.stderr
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    newest = filled.json("logs", "search", "--limit", "2")["data"]
    assert [r["id"] for r in rows] == [r["id"] for r in reversed(newest)]
    plain = filled.run("logs", "tail")
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == 5
    assert "pears only" in plain.stdout


def test_tail_follow_prints_records_as_they_are_stored(tmp_path: Path, upstream: FakeUpstream) -> None:
    log = fill_log(tmp_path, upstream, [chat("alpha", "first", "ana")])
    process = subprocess.Popen(
        [*OPSGATE, "logs", "tail", "-n", "1", "--follow", "--json", "--interval", "0.1", "--config", str(log.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        bufsize=0,  # unbuffered: readline takes one line, so select() sees a second one still in the pipe
    )

    def next_line(timeout: float = 20.0) -> dict[str, Any]:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], timeout)
        assert readable, "tail --follow printed nothing"
        return dict(orjson.loads(process.stdout.readline()))

    try:
        assert next_line()["id"] in log.sent
        writer = RecordLog(load_config(log.config).record)  # another gateway process, as it were
        writer.start()
        writer.write({"id": "later-1", "ts": time.time(), "endpoint": "chat", "model": "beta", "status": 200})
        assert writer.writer is not None and writer.writer.flush()
        # Stored now, requested two hours ago (a replayed journal, a writer catching up): still new.
        writer.write({"id": "late-1", "ts": time.time() - 7200, "endpoint": "chat", "model": "beta", "status": 200})
        assert writer.writer.flush()
        writer.stop()
        assert next_line()["id"] == "later-1"
        late = next_line()
        assert late["id"] == "late-1" and late["stored_at"] >= late["ts"] + 7000
    finally:
        process.terminate()
        process.wait(10)


# -- export and usage -----------------------------------------------------------------------------------------


def test_export_jsonl_to_stdout(filled: FilledLog) -> None:
    result = filled.run("logs", "export", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert {r["id"] for r in records} == set(filled.sent)
    assert all(r["request"]["messages"] == filled.sent[r["id"]]["messages"] for r in records)


def test_export_csv_to_a_file(filled: FilledLog, tmp_path: Path) -> None:
    output = tmp_path / "beta.csv"
    result = filled.run("logs", "export", "--format", "csv", "--model", "beta", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert f"exported 2 records to {output}" in result.stderr
    with output.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert {row["id"] for row in rows} == filled.ids(model="beta")
    assert {orjson.loads(row["request"])["messages"][0]["content"] for row in rows} == {
        "apples and oranges",
        "pears only",
    }
    assert not list(tmp_path.glob("*.partial"))


def test_export_parquet_without_pyarrow_exits_2(filled: FilledLog, tmp_path: Path) -> None:
    (tmp_path / "pyarrow.py").write_text("raise ImportError('pyarrow is blocked in this test')\n")
    output = tmp_path / "out.parquet"
    result = filled.run("logs", "export", "--format", "parquet", "-o", str(output), env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2 and "needs pyarrow" in result.stderr and not output.exists()


def test_export_parquet_to_a_file(filled: FilledLog, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    output = tmp_path / "all.parquet"
    result = filled.run("logs", "export", "--format", "parquet", "-o", str(output))
    assert result.returncode == 0, result.stderr
    assert set(pq.read_table(output).column("id").to_pylist()) == set(filled.sent)


def test_usage_by_model_and_user(filled: FilledLog) -> None:
    models = {row["model"]: row for row in filled.json("usage", "--by", "model")}
    assert {m: r["requests"] for m, r in models.items()} == {"alpha": 2, "beta": 2, "nope": 1}
    assert models["alpha"]["cost"] == pytest.approx(2 * 17 / 1_000_000) and models["nope"]["errors"] == 1
    users = {row["user"]: row["requests"] for row in filled.json("usage", "--by", "user", "--since", "1d")}
    assert users == {"ana": 2, "bob": 2, "carl": 1}
    days = filled.json("usage", "--by", "day")
    assert sum(row["requests"] for row in days) == 5
    table = filled.run("usage", "--by", "user")
    assert table.returncode == 0 and "ana" in table.stdout and "carl" in table.stdout


# -- erasure --------------------------------------------------------------------------------------------------


def test_erase_asks_then_deletes_and_shows_the_counts(tmp_path: Path, upstream: FakeUpstream) -> None:
    log = fill_log(
        tmp_path,
        upstream,
        [chat("alpha", "erin's secret", "erin"), chat("beta", "hi", "erin"), chat("beta", "hi", "fay")],
    )
    declined = log.run("logs", "erase", "--user", "erin", stdin="n\n")
    assert declined.returncode == 1 and "Aborted" in declined.stderr
    assert {r["id"] for r in log.json("logs", "search", "--user", "erin")["data"]} == log.ids(user="erin")

    result = log.json("logs", "erase", "--user", "erin", "--yes")
    copies = {"eval_items": 0, "eval_scores": 0, "feedback": 0}  # online evaluation is off here
    assert result["before"] == {"requests": 2, "usage_daily": 2, "audit_log": 0, **copies}
    assert result["after"] == {"requests": 0, "usage_daily": 0, "audit_log": 0, **copies}
    assert log.json("logs", "search", "--user", "erin")["data"] == []
    assert log.json("logs", "search", "secret")["data"] == []
    assert {r["id"] for r in log.json("logs", "search")["data"]} == log.ids(user="fay")

    table = log.run("logs", "erase", "--user", "fay", "--yes")
    assert table.returncode == 0, table.stderr
    assert "requests" in table.stdout and "usage_daily" in table.stdout and "erased user fay" in table.stdout


# -- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("logs", "search", "--since", "yesterday"), "--since"),
        (("logs", "search", "--limit", "100000"), "--limit"),
        (("logs", "search", "--status", "7xx"), "--status"),
        (("logs", "search", "--tag", "no-equals"), "--tag"),
        (("logs", "search", "--cursor", "garbage"), "--cursor"),
        (("logs", "search", "--min-cost", "cheap"), "--min-cost"),
        (("logs", "tail", "-n", "5000"), "--limit"),
        (("logs", "export", "--until", "later"), "--until"),
        (("usage", "--since", "whenever"), "--since"),
        (("usage", "--since", "1h", "--until", "2h"), "--since"),
        (("usage", "--by", "planet"), "--by"),
    ],
)
def test_bad_filters_exit_2_naming_the_option(filled: FilledLog, args: tuple[str, ...], says: str) -> None:
    result = filled.run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr and "Traceback" not in result.stderr


def test_config_without_a_store_or_database(tmp_path: Path) -> None:
    config = tmp_path / "none.yaml"
    config.write_text("record:\n  store: none\n")
    result = FilledLog(config, {}).run("logs", "search")
    assert result.returncode == 2 and "record.store is not set" in result.stderr
    config.write_text(f"record:\n  store: sqlite:///{tmp_path}/missing.db\n")
    result = FilledLog(config, {}).run("logs", "tail")
    assert result.returncode == 1 and "no request log at" in result.stderr
    assert not (tmp_path / "missing.db").exists()
