"""The sentinel's done-when test: a planted upstream change (same model name, different answers) is
caught and pages through the SLO path; an unchanged upstream stays quiet; a system_fingerprint change
alone is caught; the calls are recorded with purpose=sentinel. Real gateway on loopback, real
upstreams on loopback, real SQLite and PostgreSQL, the real MiniLM."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web
from click.testing import CliRunner

from opsgate.cli.main import cli
from tests.store.conftest import fresh_pg_schema
from tests.support import Gateway, free_port, start_gateway, wait_until

PROMPTS = {
    "capital": "What is the capital of France?",
    "sum": "What is 2 + 2?",
    "colour": "What colour is the sky on a clear day?",
}
ANSWERS = {
    PROMPTS["capital"]: "The capital of France is Paris.",
    PROMPTS["sum"]: "2 + 2 equals 4.",
    PROMPTS["colour"]: "On a clear day the sky is blue.",
}
# The planted change: the vendor swapped the model under the same name.
CHANGED = {
    PROMPTS["capital"]: "I am unable to help with geography questions right now.",
    PROMPTS["sum"]: "Let me think step by step. Two plus two... the answer is 5.",
    PROMPTS["colour"]: "On a clear day the sky is blue.",
}


class GoldenUpstream:
    """An OpenAI-compatible chat upstream on loopback: an answer per prompt, a model and a fingerprint
    it reports (the model name is always the one asked for unless ``model`` is set)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.answers: dict[str, str] = dict(ANSWERS)
        self.model: str | None = None
        self.fingerprint: str | None = "fp_1"
        self.delay = 0.0  # seconds before answering
        self.fail = False  # answer 500
        self.requests: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> GoldenUpstream:
        self.thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            return web.json_response({"error": {"message": "upstream down", "type": "server_error"}}, status=500)
        prompt = body["messages"][-1]["content"]
        answer = self.answers.get(prompt, "I do not know.")
        data: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model or body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
        }
        if self.fingerprint is not None:
            data["system_fingerprint"] = self.fingerprint
        return web.json_response(data)


@pytest.fixture()
def upstreams() -> Iterator[tuple[GoldenUpstream, GoldenUpstream]]:
    first, second = GoldenUpstream().start(), GoldenUpstream().start()
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/requests.db"
        return
    with fresh_pg_schema("opsgate_sentinel") as url:
        yield url


def sentinel_config(
    store_url: str, upstreams: tuple[GoldenUpstream, GoldenUpstream], **sentinel: Any
) -> dict[str, Any]:
    """An alias ``gold`` with two deployments (one per upstream, same vendor model), three golden
    prompts, and a behaviour_change objective per deployment plus one for the alias."""
    deployments = [
        {"type": "openai", "base_url": up.base_url, "model": "vendor-model", "breaker": {"enabled": False}}
        for up in upstreams
    ]
    return {
        "models": [{"name": "gold", "routing": {"retries": 0}, "deployments": deployments}],
        "record": {"store": store_url},
        "sentinel": {
            "enabled": True,
            "interval_seconds": 3600,
            "first_run_seconds": 86400,  # tests run the sentinel by hand unless they say otherwise
            "jitter_seconds": 0,
            "lease_seconds": 15,
            "similarity_threshold": 0.9,
            "min_changed_prompts": 1,
            "models": {"gold": {"prompts": [{"id": key, "prompt": text} for key, text in PROMPTS.items()]}},
            **sentinel,
        },
        "alerts": {"interval_seconds": 1},  # the alert evaluator opens alert rows within a second
        "slo": {
            "objectives": [
                {"name": "gold-0-behaviour", "sli": "behaviour_change", "window": "1h",
                 "filter": {"model": "gold", "deployment": "gold#0"}},
                {"name": "gold-1-behaviour", "sli": "behaviour_change", "window": "1h",
                 "filter": {"model": "gold", "deployment": "gold#1"}},
                {"name": "gold-behaviour", "sli": "behaviour_change", "window": "1h", "filter": {"model": "gold"}},
            ]
        },
    }  # fmt: skip


def run_sentinel(gateway: Gateway, path: str = "/admin/sentinel/run", **body: Any) -> list[dict[str, Any]]:
    response = httpx.post(gateway.url + path, json=body, timeout=120)
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["data"]
    return runs


def slo_states(gateway: Gateway) -> dict[str, str]:
    response = httpx.get(gateway.url + "/admin/slo", timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    rows = body["data"] if isinstance(body, dict) else body
    return {row["name"]: row["state"] for row in rows}


def by_deployment(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {run["deployment"]: run for run in runs}


def test_a_planted_upstream_change_is_caught_and_pages(
    store_url: str, upstreams: tuple[GoldenUpstream, GoldenUpstream], caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    first, second = upstreams
    gateway = start_gateway(sentinel_config(store_url, upstreams, first_run_seconds=0))
    try:
        # The first scheduled run (first_run_seconds 0) stores the baselines of both deployments.
        def baselined() -> bool:
            runs = httpx.get(gateway.url + "/admin/sentinel/runs", timeout=30).json()["data"]
            return {r["deployment"] for r in runs if r["status"] == "baseline"} == {"gold#0", "gold#1"}

        assert wait_until(baselined, timeout=60)
        runs = httpx.get(gateway.url + "/admin/sentinel/runs", timeout=30).json()["data"]
        assert {r["kind"] for r in runs} == {"scheduled"}
        assert len(first.requests) == len(second.requests) == 3  # pinned: each deployment got every prompt
        assert all(r["temperature"] == 0 and r["seed"] == 1234 for r in first.requests + second.requests)

        # Unchanged upstreams: several runs, nothing raised.
        for _ in range(3):
            runs = by_deployment(run_sentinel(gateway))
            assert {d: r["status"] for d, r in runs.items()} == {"gold#0": "unchanged", "gold#1": "unchanged"}
            assert all(r["changed"] == 0 and r["share"] == 0.0 for r in runs.values())
        assert set(slo_states(gateway).values()) == {"ok"}

        # The planted change on the second deployment only: same model name, different answers.
        second.answers = dict(CHANGED)
        with caplog.at_level(logging.WARNING, logger="opsgate.sentinel"):
            runs = by_deployment(run_sentinel(gateway))
        assert runs["gold#0"]["status"] == "unchanged"
        changed = runs["gold#1"]
        assert changed["status"] == "changed"
        assert changed["changed"] == 2 and changed["prompts"] == 3
        assert changed["share"] == pytest.approx(2 / 3)
        assert not changed["model_changed"] and not changed["fingerprint_changed"]
        assert any("deployment gold#1 changed behaviour" in r.getMessage() for r in caplog.records)
        assert not any("gold#0 changed" in r.getMessage() for r in caplog.records)

        # The stored run, with a per-prompt diff.
        detail = httpx.get(gateway.url + f"/admin/sentinel/runs/{changed['id']}", timeout=30).json()
        items = {i["prompt_id"]: i for i in detail["items"]}
        assert items["colour"]["status"] == "same" and items["colour"]["diff"] is None
        assert items["capital"]["status"] == "changed"
        assert "-The capital of France is Paris." in items["capital"]["diff"]
        assert "+I am unable to help with geography questions right now." in items["capital"]["diff"]
        assert items["capital"]["similarity"] < 0.9

        # The behaviour_change objectives of the changed deployment and of the alias page; the other is ok.
        states = slo_states(gateway)
        assert states == {"gold-0-behaviour": "ok", "gold-1-behaviour": "page", "gold-behaviour": "page"}
        config_file = tmp_path / "gateway.yaml"  # the store the gateway really uses (support.isolated moves SQLite)
        config_file.write_text(yaml.safe_dump(sentinel_config(str(gateway.config.record.store), upstreams)))
        result = CliRunner().invoke(cli, ["slo", "status", "--config", str(config_file), "--json"])
        assert result.exit_code == 0, result.output
        rows = {row["name"]: row for row in json.loads(result.output)}
        assert rows["gold-1-behaviour"]["state"] == "page"
        assert "page: deployment gold#1 changed behaviour" in rows["gold-1-behaviour"]["firing"]
        assert rows["gold-0-behaviour"]["state"] == "ok"

        # …and the SLO alert path opens a page alert for it (the row webhooks are sent from).
        def alerts(state: str) -> set[tuple[str, str]]:
            response = httpx.get(gateway.url + "/admin/alerts", params={"state": state}, timeout=30)
            assert response.status_code == 200, response.text
            return {(a["slo"], a["severity"]) for a in response.json()["data"]}

        assert wait_until(lambda: ("gold-1-behaviour", "page") in alerts("firing"), timeout=60)
        assert ("gold-0-behaviour", "page") not in alerts("firing")

        # Re-baseline after an intended change: the next run is quiet again and the page clears.
        rebased = run_sentinel(gateway, "/admin/sentinel/baseline", alias="gold", deployment="gold#1")
        assert [r["status"] for r in rebased] == ["baseline"]
        runs = by_deployment(run_sentinel(gateway, deployment="gold#1"))
        assert runs["gold#1"]["status"] == "unchanged"
        assert slo_states(gateway)["gold-1-behaviour"] == "ok"
        assert wait_until(lambda: ("gold-1-behaviour", "page") in alerts("resolved"), timeout=60)

        # Every sentinel call is an ordinary recorded request tagged purpose=sentinel.
        def recorded() -> list[dict[str, Any]]:
            response = httpx.get(
                gateway.url + "/admin/requests", params={"tag": "opsgate_purpose=sentinel", "limit": 500}, timeout=30
            )
            assert response.status_code == 200, response.text
            return list(response.json()["data"])

        calls = len(first.requests) + len(second.requests)
        assert wait_until(lambda: len(recorded()) == calls, timeout=60), (len(recorded()), calls)
        records = recorded()
        assert {r["deployment"] for r in records} == {"gold#0", "gold#1"}
        assert all(r["model"] == "gold" and r["status"] == 200 for r in records)
        assert all(r["metadata"]["purpose"] == "sentinel" for r in records)
        assert {r["metadata"]["sentinel_prompt"] for r in records} == set(PROMPTS)

        # …so the drift monitor never takes golden prompts for live traffic.
        from opsgate.drift.features import observe

        assert all(observe(record) is None for record in records)
    finally:
        gateway.server.stop()


def test_a_system_fingerprint_change_alone_is_caught(
    store_url: str, upstreams: tuple[GoldenUpstream, GoldenUpstream]
) -> None:
    first, _ = upstreams
    gateway = start_gateway(sentinel_config(store_url, upstreams))
    try:
        assert {r["status"] for r in run_sentinel(gateway)} == {"baseline"}
        first.fingerprint = "fp_2"  # same answers, the vendor's backend changed
        runs = by_deployment(run_sentinel(gateway))
        assert runs["gold#0"]["status"] == "changed"
        assert runs["gold#0"]["fingerprint_changed"] and runs["gold#0"]["changed"] == 0
        assert runs["gold#0"]["share"] == 1.0
        assert runs["gold#0"]["summary"]["system_fingerprint"] == ["fp_1 → fp_2"]
        assert runs["gold#1"]["status"] == "unchanged"
        # A changed reported model is caught the same way.
        first.fingerprint = "fp_1"
        first.model = "vendor-model-2026-12-01"
        runs = by_deployment(run_sentinel(gateway, alias="gold", deployment="gold#0"))
        assert runs["gold#0"]["status"] == "changed" and runs["gold#0"]["model_changed"]
        assert slo_states(gateway)["gold-0-behaviour"] == "page"
    finally:
        gateway.server.stop()
