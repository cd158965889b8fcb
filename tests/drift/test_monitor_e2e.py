"""End to end: a real gateway on loopback with a fake upstream, called with the official openai SDK →
records → the drift collector (real MiniLM embeddings) → a check → an SLO measurement →
``opsgate slo status`` shows the drift objective firing; ``opsgate drift`` reads the same results."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from openai import OpenAI

from opsgate.cli.main import cli
from tests.drift.traffic import prompt
from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway, wait_until

N = 70  # requests per window
LONG_ANSWER = " ".join(["Mix the flour with the butter, then bake it until golden and serve it warm."] * 6)
SHORT_ANSWER = "Fertig."


@pytest.fixture()
def drift_gateway(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    deployment = {"type": "openai", "base_url": upstream_server.base_url, "model": "m", "breaker": {"enabled": False}}
    gw = start_gateway(
        {
            "models": [{"name": "chat-model", "deployments": [deployment]}],
            "drift": {
                "enabled": True,
                "bucket": "1s",
                "interval": "1h",  # checks are asked for through the API here
                "flush_interval": 0.2,
                "max_embeddings_per_second": 1000,
                "language_sample_rate": 1.0,
                "sample_rate": 0.5,  # ~35 texts per side and window: enough for MMD, light on a busy CPU
                "reservoir": 32,
                "min_samples": {"requests": 50, "answers": 30, "embeddings": 20},
            },
            "slo": {
                "objectives": [
                    {"name": "chat-drift", "sli": "drift", "window": "1d", "filter": {"model": "chat-model"}},
                ]
            },
        }
    )
    yield gw
    gw.server.stop()
    upstream_server.script.content = "Hello from upstream"


def send(client: OpenAI, rng: random.Random, n: int, language: str) -> None:
    for _ in range(n):
        reply = client.chat.completions.create(
            model="chat-model", messages=[{"role": "user", "content": prompt(rng, "cooking", language)}]
        )
        assert reply.choices[0].message.content


def drift_status(gw: Gateway) -> dict[str, Any]:
    return dict(httpx.get(gw.url + "/admin/drift/status", timeout=30).json()["monitor"]["collector"])


def test_shifted_traffic_fires_the_drift_objective(
    drift_gateway: Gateway, upstream_server: FakeUpstream, tmp_path: Path
) -> None:
    gw = drift_gateway
    client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=60)
    rng = random.Random(1)
    start = math.floor(time.time())
    upstream_server.script.content = LONG_ANSWER
    send(client, rng, N, "en")
    boundary = math.floor(time.time()) + 1  # the next 1-second bucket starts the current window
    time.sleep(max(0.0, boundary - time.time()) + 0.05)
    upstream_server.script.content = SHORT_ANSWER
    send(client, rng, N, "de")
    end = math.floor(time.time()) + 1
    # Everything summarised and the sampled texts embedded by the real MiniLM, off the request path.
    assert wait_until(lambda: drift_status(gw)["summarised"] >= 2 * N, 60), drift_status(gw)

    def embedded() -> bool:
        status = drift_status(gw)
        return bool(status["embedded"] + status["embed_dropped"] == status["sampled"] and status["embedded"] >= 60)

    assert wait_until(embedded, 240), drift_status(gw)
    assert drift_status(gw)["dropped"] == 0

    body = {
        "alias": "chat-model",
        "reference": {"start": start, "end": boundary},
        "current": {"start": boundary, "end": end},
    }
    result = httpx.post(gw.url + "/admin/drift/check", json=body, timeout=120).json()
    assert result["reference"]["requests"] == N and result["current"]["requests"] == N, result
    assert result["drifted"], result
    moved = {t["feature"]: t for t in result["tests"] if t["drifted"]}
    assert moved["prompt_language"]["summary"].startswith("share of 'de' prompts")
    assert moved["answer_length"]["summary"].startswith("mean answer length \u2212")
    assert "answer_embedding" in moved, [
        (t["feature"], t["drifted"], t["p_value"], t["effect"]) for t in result["tests"]
    ]
    assert result["current"]["embedded"] >= 30

    # The SLO path: the measurement written by the check makes the drift objective a ticket.
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        json.dumps(
            {
                "record": {"store": gw.config.record.store},
                "slo": {
                    "objectives": [
                        {"name": "chat-drift", "sli": "drift", "window": "1d", "filter": {"model": "chat-model"}}
                    ]
                },
            }
        )
    )
    slo = CliRunner().invoke(cli, ["slo", "status", "--config", str(config_file), "--json"])
    assert slo.exit_code == 0, slo.output
    objective = next(row for row in json.loads(slo.output) if row["name"] == "chat-drift")
    assert objective["state"] == "ticket", objective
    assert any(label.startswith("ticket: drift detected") for label in objective["firing"])

    # The CLI sees the same check, through the API and through the store.
    table = CliRunner().invoke(cli, ["drift", "status", "--url", gw.base_url])
    assert table.exit_code == 0 and "chat-model" in table.output and "DRIFT" in table.output, table.output
    report = tmp_path / "drift.html"
    made = CliRunner().invoke(
        cli,
        [
            "drift",
            "report",
            "--alias",
            "chat-model",
            "--format",
            "html",
            "--output",
            str(report),
            "--config",
            str(config_file),
        ],
    )
    assert made.exit_code == 0, made.output
    page = report.read_text()
    assert page.startswith("<!") and "data:image/png;base64," in page and "http://" not in page.split("<body", 1)[-1]
