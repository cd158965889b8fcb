"""bench/soak.py for 15 seconds: 3 replicas on PostgreSQL and Redis behind HAProxy lose no record and overshoot
no budget (the 30-minute run and its numbers are in docs/benchmarks.md)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="Debian's haproxy is not installed (.ci/run installs it)")
@pytest.mark.skipif(not (reachable(5432) and reachable(6379)), reason="needs PostgreSQL and Redis on 127.0.0.1")
def test_a_short_soak_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [
            sys.executable,
            "bench/soak.py",
            *("--duration", "15", "--warmup", "3", "--rate", "10", "--hot-rpm", "5"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["requests"] > 100
    assert result["failures"] == 0, result["failure_examples"]
    assert result["lost_records"] == 0, result["lost_examples"]
    assert result["budget"]["overshot"] is False
    assert result["status_counts"].get("429", 0) > 0  # the hot user met its limit: limits are shared and on
