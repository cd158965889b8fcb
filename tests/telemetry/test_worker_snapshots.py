"""A starting worker marks the metrics snapshots of dead workers: still counted, never overwritten."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from opsgate.domain.config import parse_config
from opsgate.telemetry.setup import Telemetry, with_metrics_dir


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_dead_workers_snapshots_are_marked_and_still_counted(tmp_path: Path) -> None:
    config = with_metrics_dir(parse_config({"models": []}), str(tmp_path))
    telemetry = Telemetry(
        config, deployments=dict, backends=dict, record=None, stages=dict, labels={}
    )  # fmt: skip
    assert telemetry.metrics is not None
    pid = dead_pid()
    telemetry.metrics.write({"endpoint": "chat", "model": None, "status": 200, "latency_ms": 5.0})
    (tmp_path / f"{pid}.json").write_text(json.dumps(telemetry.metrics.snapshot()))  # the dead worker's counts

    async def start_and_stop() -> None:
        await telemetry.start()
        await telemetry.stop()

    asyncio.run(start_and_stop())
    names = sorted(path.name for path in tmp_path.glob("*.json"))
    assert f"{pid}.json" not in names and any(name.startswith(f"dead-{pid}-") for name in names), names
    body, _ = telemetry.render(None)
    totals = [line for line in body.decode().splitlines() if line.startswith("opsgate_requests_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in totals) == 2.0  # its own 1 + the dead worker's 1
