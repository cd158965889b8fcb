"""Fixtures for the dashboard: a gateway in front of the fake upstream, with its request log, and a browser."""

from __future__ import annotations

import contextlib
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
from tests.store.conftest import fresh_pg_schema
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium per module (Playwright drives it; no downloaded browser).

    Per module, not per session: while Playwright's sync API is open its event loop counts as running in
    the main thread, so a later test's ``asyncio.run`` failed ("cannot be called from a running event
    loop": tests/server/test_body_limits.py after tests/ui/test_browser.py in one process)."""
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


# -- seeded traffic for the checks against the admin API -------------------------------------------

GUARD_EVENT_COUNT = 55  # redactions: more than one page of guard events (ui.views.GUARD_EVENTS_PER_PAGE)


def seeded_config(base_url: str) -> dict[str, Any]:
    """Two priced aliases (one with two deployments, for a release canary), an SLO with an SLA, and a guard
    policy that redacts e-mail addresses and blocks a banned word."""
    deployment = {"type": "openai", "base_url": base_url, "model": "real-model", "breaker": {"enabled": False}}
    return {
        "models": [
            {
                "name": "up",
                "price": {"input_per_million": 150.0, "output_per_million": 600.0},
                "routing": {"retries": 0},
                "deployments": [deployment, deployment],
            },
            {
                "name": "cheap",
                "price": {"input_per_million": 1.0, "output_per_million": 2.0},
                "routing": {"retries": 0},
                "deployments": [deployment],
            },
        ],
        "record": {"flush_interval_ms": 20},
        "releases": {"poll_seconds": 0.2},
        "slo": {
            "objectives": [
                {
                    "name": "availability",
                    "sli": "availability",
                    "target": 0.99,
                    "sla": 0.95,
                    "window": "1d",
                    "kpi": "reliability",
                },
                {"name": "latency-p95", "sli": "latency", "threshold_ms": 500, "target": 0.95, "window": "1d"},
            ]
        },
        "guard": {
            "enabled": True,
            "policies": [
                {
                    "name": "default",
                    "input": [
                        {"scanner": "pii", "entities": ["email"], "action": "redact"},
                        {"scanner": "banned_terms", "terms": ["forbiddenword"], "action": "block"},
                    ],
                    "output": [],
                }
            ],
        },
    }


class Seeded:
    """What the seeded fixture made: the gateway, the guard events' request ids and the eval/release ids."""

    def __init__(self, gateway: Gateway, guard_ids: list[str], runs: list[str], experiment: str) -> None:
        self.gateway = gateway
        self.guard_ids = guard_ids
        self.runs = runs
        self.experiment = experiment


def _seed_evals(gateway: Gateway) -> list[str]:
    """Two finished evaluation runs (for the run and comparison pages), written through the eval store."""
    from opsgate.evals.dataset import parse_item
    from opsgate.evals.runner import summarise_run
    from opsgate.evals.store import EvalStore, ItemResult

    store = EvalStore(gateway.app.state.gateway.record_log.store)
    version, _ = store.save_dataset(None, "ui-set", [parse_item({"prompt": "2+2?", "reference": "4"})])
    runs = []
    for output in ("4", "four"):
        run = store.create_run(None, "up", dataset_id=version.id)
        scores = {"exact": {"value": 1.0 if output == "4" else 0.0, "passed": output == "4"}}
        item = ItemResult("000000", 0, "ok", input="2+2?", output=output, scores=scores, latency_ms=5.0)
        store.write_results(run, None, "up", [item])
        store.finish_run(run, "completed", summarise_run(store, run))
        runs.append(run)
    return runs


@pytest.fixture(scope="package")
def seeded_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="package", params=["sqlite", "postgres"])
def seeded(request: pytest.FixtureRequest, seeded_upstream: FakeUpstream) -> Iterator[Seeded]:
    """A gateway with mixed traffic: two models, 4xx (no model, unknown model, a blocked input), 5xx on both
    models, slow answers (latency past a second), guard redactions over more than one page, a release canary
    with its experiment, a prompt, two eval runs and feedback. Shared by the modules of this package; once on
    SQLite and once on PostgreSQL (a fresh schema of the local server's ``test`` database)."""
    with contextlib.ExitStack() as stack:
        config = seeded_config(seeded_upstream.base_url)
        if request.param == "postgres":
            config["record"]["store"] = stack.enter_context(fresh_pg_schema("opsgate_ui"))
        gateway = start_gateway(config)
        try:
            yield _seed(gateway, seeded_upstream)
        finally:
            gateway.server.stop()


def _seed(gateway: Gateway, ui_upstream: FakeUpstream) -> Seeded:
    """Send the seeded traffic through ``gateway`` and wait until the writer stored all of it."""
    url = gateway.base_url
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    ask = [{"role": "user", "content": "hello"}]
    ui_upstream.script = Script()
    prompt = httpx.post(
        gateway.url + "/admin/prompts", json={"name": "greeting", "messages": [{"role": "system", "content": "Hi"}]}
    )
    assert prompt.status_code in (200, 201), prompt.text
    first = httpx.post(
        gateway.url + "/admin/releases", json={"alias": "up", "deployments": {"up#0": 1}, "activate": True}
    )
    second = httpx.post(gateway.url + "/admin/releases", json={"alias": "up", "deployments": {"up#1": 1}})
    assert first.status_code == 201 and second.status_code == 201, (first.text, second.text)
    canary = httpx.post(gateway.url + "/admin/releases/up/canary", json={"release": second.json()["id"], "weight": 20})
    assert canary.status_code == 200, canary.text
    for i in range(8):
        client.chat.completions.create(model="up", messages=ask, user=f"u{i}")
    for _ in range(4):
        client.chat.completions.create(model="cheap", messages=ask)
    ui_upstream.script = Script(delay=1.2)  # past a second: the latency axis labels get four digits
    for model in ("up", "cheap"):
        client.chat.completions.create(model=model, messages=ask)
    ui_upstream.script = Script(mode="status", status=500, body={"error": {"message": "boom"}})
    for model in ("up", "up", "cheap"):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model=model, messages=ask)
    ui_upstream.script = Script()
    # Client mistakes: no model at all (the record has none), an unknown model, a banned word (guard block).
    assert httpx.post(url + "/chat/completions", json={"messages": ask}).status_code == 400
    assert httpx.post(url + "/chat/completions", json={"model": "nope", "messages": ask}).status_code == 404
    blocked = httpx.post(
        url + "/chat/completions",
        json={"model": "cheap", "messages": [{"role": "user", "content": "say forbiddenword"}]},
    )
    assert blocked.status_code == 400, blocked.text
    guard_ids = [blocked.headers["x-request-id"]]
    for i in range(GUARD_EVENT_COUNT):
        answer = client.chat.completions.with_raw_response.create(
            model="cheap", messages=[{"role": "user", "content": f"Write to person{i}@example.com today"}]
        )
        guard_ids.append(answer.headers["x-request-id"])
    total = 8 + 4 + 2 + 3 + 3 + GUARD_EVENT_COUNT
    assert len(wait_for_records(gateway, "limit=1000", count=total, timeout=60)) == total
    # Three rated requests (a request counts once, with its latest rating: 4d07f03).
    for request_id, score in zip(guard_ids[1:4], ("up", "down", 5), strict=True):
        sent = httpx.post(url + "/feedback", json={"request_id": request_id, "score": score})
        assert sent.status_code == 201, sent.text
    return Seeded(gateway, guard_ids, _seed_evals(gateway), canary.json()["experiment"])


def watch_console(page: Any) -> list[str]:
    """Every console error (failed resources included) and uncaught script error of ``page``."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    return problems
