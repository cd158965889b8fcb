"""``opsgate eval`` on bad input: exit code 2 and a message, never a traceback."""

from __future__ import annotations

from pathlib import Path

import orjson
import yaml
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.store.record_log import open_store


def config(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    record = {"store": f"sqlite:///{tmp_path}/r.db", "journal_dir": str(tmp_path / "j")}
    deployment = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    path.write_text(yaml.safe_dump({"models": [{"name": "m", "deployments": [deployment]}], "record": record}))
    open_store(record["store"]).close()  # the eval commands never create the store
    return str(path)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "400"}).invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def test_bad_input_exits_2_with_a_message(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": 1}\n')
    code, out = run("eval", "dataset", "import", "d", str(bad), "--config", cfg)
    # Rich may wrap inside the long temporary path (a space where it broke the line): compare without spaces.
    assert code == 2 and "bad.jsonl:1:prompt:mustbeastring" in out.replace(" ", ""), out
    good = tmp_path / "good.jsonl"
    good.write_bytes(orjson.dumps({"prompt": "hi", "reference": "hi"}) + b"\n")
    assert run("eval", "dataset", "import", "d", str(good), "--config", cfg)[0] == 0
    code, out = run("eval", "dataset", "import", "bad/name", str(good), "--config", cfg)
    assert code == 2 and "dataset name" in out
    assert run("eval", "run", "nope", "-m", "m", "--config", cfg)[0] == 2
    code, out = run("eval", "run", "d", "-m", "m", "-s", "nonsense", "--config", cfg)
    assert code == 2 and "unknown scorer 'nonsense'" in out
    code, out = run("eval", "run", "d", "-m", "m", "-s", "regex:(?<=a)b", "--config", cfg)
    assert code == 2 and "RE2 cannot compile" in out
    assert run("eval", "run", "--resume", "run_missing", "--config", cfg)[0] == 2
    code, out = run("eval", "gate", "--baseline", "a", "--candidate", "b", "--max-degradation", "lots", "--config", cfg)
    assert code == 2 and "max-degradation" in out
    code, out = run("eval", "gate", "--baseline", "a", "--candidate", "b", "--config", cfg)
    assert code == 2 and "no evaluation run 'a'" in out
    assert run("eval", "compare", "a", "b", "--config", cfg)[0] == 2
    assert run("eval", "report", "a", "--config", cfg)[0] == 2
    assert run("eval", "dataset", "from-logs", "x", "--since", "yesterday-ish", "--config", cfg)[0] == 2
    code, out = run("eval", "dataset", "export", "d", "--config", cfg)
    assert code == 0 and '{"prompt":"hi","reference":"hi"}' in out
    code, out = run("eval", "dataset", "list", "--config", cfg)
    assert code == 0 and "d" in out
    # A run whose every call fails (nothing listens on port 9) still completes, with each item failed.
    code, out = run("eval", "run", "d", "-m", "m", "--config", cfg, "--timeout", "5")
    assert code == 0 and "0 ok, 1 failed" in out
    code, out = run("eval", "runs", "--config", cfg)
    assert code == 0 and "completed" in out


def test_json_is_a_flag_and_a_file_is_output(tmp_path: Path) -> None:
    # Before, --json took a file name (issue 17, "Consistent CLI"): now it never takes a value.
    cfg = config(tmp_path)
    for command in (["eval", "compare", "a", "b"], ["eval", "gate", "--baseline", "a", "--candidate", "b"]):
        code, out = run(*command, "--json", "verdict.json", "--config", cfg)
        assert code == 2 and "verdict.json" in out, out  # an unexpected argument, not a file
        # The flag and -o/--output parse: what stops these runs is only that the runs do not exist.
        code, out = run(*command, "--json", "--config", cfg)
        assert code == 2 and "no evaluation run 'a'" in out, out
        code, out = run(*command, "-o", str(tmp_path / "verdict.json"), "--config", cfg)
        assert code == 2 and "no evaluation run 'a'" in out, out
