"""``opsgate serve --workers 2`` as real processes: shared numbers stay shared, or serve refuses.

With in-memory counters each worker would count alone (a global limit of 10 admitting 20), and
``/metrics`` would answer from whichever worker took the scrape; both are tested against 2 workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import upstream_config
from tests.fake_upstream import FakeUpstream
from tests.limits.support import REDIS_URL, scratch_prefix
from tests.support import serve_process

CHAT = {"model": "up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
START_SECONDS = 120.0  # two workers import and start on a loaded machine


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fresh_post(url: str) -> httpx.Response:
    # A new connection each time, so the kernel spreads requests over both workers.
    with httpx.Client(timeout=30) as client:
        return client.post(url + "/v1/chat/completions", json=CHAT, headers={"connection": "close"})


def requests_total(url: str) -> float:
    with httpx.Client(timeout=30) as client:
        text = client.get(url + "/metrics", headers={"connection": "close"}).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "opsgate_requests_total" and sample.labels.get("model") == "up"
    )


def test_in_memory_limits_with_two_workers_are_refused(tmp_path: Path, upstream: FakeUpstream) -> None:
    config = upstream_config(upstream.base_url)
    config["limits"] = {"enabled": True, "rules": [{"per": "global", "requests_per_minute": 10}]}
    path = write_config(tmp_path, config)
    command = [sys.executable, "-m", "opsgate.cli.main"]
    served = subprocess.run(
        [*command, "serve", "--config", str(path), "--port", "9", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode != 0
    assert "limits.redis" in served.stderr and "2 workers" in served.stderr, served.stderr
    # config check reports what serve would refuse, with the config's own worker count
    config["server"] = {"workers": 2}
    checked = subprocess.run(
        [*command, "config", "check", str(write_config(tmp_path, config))],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert checked.returncode == 2 and "limits.redis" in checked.stderr, checked.stderr


def test_a_global_limit_is_shared_by_two_workers_through_redis(tmp_path: Path, upstream: FakeUpstream) -> None:
    with scratch_prefix() as prefix:
        config = upstream_config(upstream.base_url)
        config["limits"] = {
            "enabled": True,
            "redis": REDIS_URL,
            "key_prefix": prefix,
            "rules": [{"per": "global", "requests_per_minute": 10}],
        }
        path = write_config(tmp_path, config)
        with serve_process(path, tmp_path / "serve.log", ["--workers", "2"], START_SECONDS) as (_, url):
            statuses = [fresh_post(url).status_code for _ in range(20)]
    assert statuses.count(200) == 10 and statuses.count(429) == 10, statuses


def test_metrics_answer_for_every_worker(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, upstream_config(upstream.base_url))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where serve makes its temporary metrics directory
    with serve_process(path, tmp_path / "serve.log", ["--workers", "2"], START_SECONDS) as (_, url):
        assert [p.name for p in scratch.glob("opsgate-metrics-*")]  # made by serve, shared by the workers
        for _ in range(6):
            assert fresh_post(url).status_code == 200
        # Snapshots are left every second: wait until 10 scrapes in a row (over both workers) say 6.
        deadline, in_a_row, seen = time.monotonic() + 60, 0, []
        while in_a_row < 10 and time.monotonic() < deadline:
            seen.append(requests_total(url))
            in_a_row = in_a_row + 1 if seen[-1] == 6 else 0
            time.sleep(0.05)
    assert in_a_row == 10, seen
    assert all(total <= 6 for total in seen), seen  # never more than was sent
    assert not list(scratch.glob("opsgate-metrics-*"))  # removed when serve stopped
