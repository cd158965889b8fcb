"""The ``opsgate`` CLI, run as a user runs it (a subprocess), against the real model."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fake_upstream import FakeUpstream
from tests.support import Gateway

OPSGATE = [sys.executable, "-m", "opsgate.cli.main"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    # The default config keeps its request log under ./.opsgate: run in a scratch directory.
    return subprocess.run(
        [*OPSGATE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd or tempfile.mkdtemp(prefix="opsgate-cli-"),
    )


def test_version() -> None:
    result = run("version")
    assert result.returncode == 0
    assert result.stdout.startswith("opsgate ") and "llama-cpp-python 0.3.36" in result.stdout


def test_config_check_ok_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  - name: m\n    deployments:\n      - type: llama_cpp\n")
    result = run("config", "check", str(good))
    assert result.returncode == 0 and "OK" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: m\n    deployments:\n      - type: llama_cpp\n        n_threads: -2\n")
    result = run("config", "check", str(bad))
    assert result.returncode == 2
    assert "models[0].deployments[0].n_threads" in result.stderr


def test_models_from_config() -> None:
    result = run("models")
    assert result.returncode == 0 and "smollm2" in result.stdout and "all-minilm-l6-v2" in result.stdout


def test_chat_in_process_streams_text() -> None:
    result = run("chat", "Say hello.", "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "completion tokens" in result.stderr


def test_chat_against_running_gateway(embedded: Gateway) -> None:
    result = run("chat", "Say hello.", "--max-tokens", "8", "--url", embedded.base_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "completion tokens" in result.stderr


def test_chat_reports_errors() -> None:
    result = run("chat", "hi", "--model", "missing-model")
    assert result.returncode == 1 and "404" in result.stderr


def test_llm_cli_through_the_gateway(embedded: Gateway, tmp_path: Path) -> None:
    """simonw's ``llm`` CLI, configured as an OpenAI-compatible model, works unchanged."""
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: opsgate-smollm2\n  model_name: smollm2\n  api_base: {embedded.base_url}\n"
    )
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path), "OPENAI_API_KEY": "unused"}
    llm = str(Path(sys.executable).parent / "llm")
    streamed = subprocess.run(
        [llm, "-m", "opsgate-smollm2", "Say hello.", "-o", "max_tokens", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.strip()
    whole = subprocess.run(
        [llm, "-m", "opsgate-smollm2", "--no-stream", "Say hello.", "-o", "max_tokens", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.strip()


def test_serve_starts_and_answers(tmp_path: Path) -> None:
    """``opsgate serve`` as a process: ready, serving, and stopping cleanly on SIGTERM."""
    import signal
    import time

    import httpx

    from tests.support import free_port

    port = free_port()
    process = subprocess.Popen(
        [*OPSGATE, "serve", "--port", str(port), "--log-level", "info"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "serve did not become ready"
            time.sleep(0.2)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=60,
            json={
                "model": "smollm2",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
                "user": "cli-test",
            },
        )
        assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it stopped.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in stderr
    # The request was recorded in the default SQLite request log, under the working directory.
    with sqlite3.connect(tmp_path / ".opsgate" / "requests.db") as db:
        rows = db.execute("SELECT status, model, completion_tokens FROM requests WHERE user_id = 'cli-test'").fetchall()
    assert rows == [(200, "smollm2", 4)]


def test_load_command_sends_traffic_and_summarises(upstream_server: FakeUpstream) -> None:
    from click.testing import CliRunner

    from opsgate.cli.main import cli
    from tests.conftest import upstream_config
    from tests.fake_upstream import Script
    from tests.support import start_gateway

    upstream_server.script = Script()
    gateway = start_gateway(upstream_config(upstream_server.base_url))
    try:
        args = ["load", "--url", gateway.base_url, "-m", "up", "--rate", "20", "--duration", "0.5"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "200" in result.output and "p99" in result.output
        assert len([r for r in gateway.sink.records if r["status"] == 200]) >= 10
        failing = CliRunner().invoke(cli, [*args[:4], "nope", *args[5:]])
        assert failing.exit_code == 1 and "404" in failing.output
    finally:
        gateway.server.stop()
