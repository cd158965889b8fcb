"""Fixtures for the dashboard: a gateway in front of the fake upstream, with its request log, and a browser."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"


def dashboard_config(base_url: str) -> dict[str, Any]:
    """One priced upstream alias (so cost shows), no retries, no breaker, and a fast record writer."""
    return {
        "models": [
            {
                "name": "up",
                "price": {"input_per_million": 150.0, "output_per_million": 600.0},
                "routing": {"retries": 0},
                "deployments": [
                    {
                        "type": "openai",
                        "base_url": base_url,
                        "model": "real-model",
                        "breaker": {"enabled": False},
                    }
                ],
            }
        ],
        "record": {"flush_interval_ms": 20},
        # Two SLOs, so the SLO board has budgets, burn rates and history to draw.
        "slo": {
            "objectives": [
                {"name": "availability", "sli": "availability", "target": 0.99, "window": "1d", "kpi": "reliability"},
                {"name": "latency-p95", "sli": "latency", "threshold_ms": 500, "target": 0.95, "window": "1d"},
            ]
        },
        # PII redaction on input, so guard verdicts (tags.guard) reach the record and the dashboard.
        "guard": {
            "enabled": True,
            "policies": [{"name": "pii", "input": [{"scanner": "pii", "action": "redact"}], "output": []}],
        },
    }


def wait_for_records(gateway: Gateway, query: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Poll the admin API until ``count`` records match ``query`` (the writer stores them shortly after)."""
    deadline = time.monotonic() + timeout
    while True:
        rows: list[dict[str, Any]] = httpx.get(f"{gateway.url}/admin/requests?{query}").json()["data"]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


class Traffic:
    """What the fixture sent: the unique word one request carried, its id, and a request the guard redacted."""

    def __init__(self, word: str, request_id: str, redacted_id: str) -> None:
        self.word = word
        self.request_id = request_id
        self.redacted_id = redacted_id


@pytest.fixture(scope="module")
def ui_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dashboard(ui_upstream: FakeUpstream) -> Iterator[Gateway]:
    """A gateway with a SQLite request log in front of the fake upstream."""
    gateway = start_gateway(dashboard_config(ui_upstream.base_url))
    yield gateway
    gateway.server.stop()


@pytest.fixture(scope="module")
def traffic(dashboard: Gateway, ui_upstream: FakeUpstream) -> Traffic:
    """Real traffic through the openai SDK: ordinary calls, one with a unique word, a stream and failures."""
    client = openai.OpenAI(base_url=dashboard.base_url, api_key="unused", max_retries=0)
    for i in range(6):
        client.chat.completions.create(model="up", messages=[{"role": "user", "content": f"warm-up question {i}"}])
    word = "zebracorn" + uuid.uuid4().hex[:8]
    ui_upstream.script = Script(content=f"The answer about {word} is forty-two.", words=9)
    raw = client.chat.completions.with_raw_response.create(
        model="up",
        messages=[
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": f"Tell me about the {word} please"},
        ],
        user="dana",
    )
    request_id = raw.headers["x-request-id"]
    ui_upstream.script = Script()
    stream = client.chat.completions.create(
        model="up", messages=[{"role": "user", "content": "stream it"}], stream=True
    )
    for _ in stream:
        pass
    ui_upstream.script = Script(mode="status", status=500, body={"error": {"message": "boom"}})
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="up", messages=[{"role": "user", "content": "this one fails"}])
    ui_upstream.script = Script()
    redacted = client.chat.completions.with_raw_response.create(
        model="up", messages=[{"role": "user", "content": "Mail the invoice to dana@example.com today"}]
    )
    redacted_id = redacted.headers["x-request-id"]
    assert wait_for_records(dashboard, "limit=20", count=11)
    for score in ("up", "down", 5):  # feedback on the request with the unique word
        answer = httpx.post(f"{dashboard.base_url}/feedback", json={"request_id": request_id, "score": score})
        assert answer.status_code == 201, answer.text
    return Traffic(word, request_id, redacted_id)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium for the whole session (Playwright drives it; no downloaded browser)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()
