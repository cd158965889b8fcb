"""Online evaluation on a real gateway: samples scored after the response, stored as online run items,
the eval_degradation SLI moved by worse answers, and a bounded sampler that drops (and counts)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx

from opsgate.evals.online import quality
from opsgate.evals.store import ANY_TENANT, EvalStore, ItemResult
from tests.fake_upstream import FakeUpstream, Script
from tests.support import start_gateway, wait_until


def online_config(base_url: str, **online: Any) -> dict[str, Any]:
    deployment = {"type": "openai", "base_url": base_url, "model": "m", "breaker": {"enabled": False}}
    return {
        "models": [{"name": "chat", "routing": {"retries": 0}, "deployments": [deployment]}],
        "slo": {
            "objectives": [
                {
                    "name": "chat-quality",
                    "sli": "eval_degradation",
                    "target": 0.05,
                    "window": "1h",
                    "filter": {"model": "chat"},
                }
            ]
        },
        "eval": {
            "online": {
                "enabled": True,
                "sample": 1.0,
                "window": "5m",
                "baseline_window": "1d",
                "min_samples": 5,
                "measure_interval_seconds": 0.3,
                "flush_seconds": 0.1,
                **online,
            }
        },
    }


def chat(url: str, text: str, **extra: Any) -> httpx.Response:
    body = {"model": "chat", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30)


def test_sampled_answers_are_scored_and_move_the_quality_sli(upstream: FakeUpstream) -> None:
    gateway = start_gateway(online_config(upstream.base_url))
    try:
        evaluator = gateway.app.state.gateway.online_eval
        store = EvalStore(gateway.app.state.gateway.record_log.store)
        # Yesterday's traffic was fine: the baseline window holds good answers.
        run = store.ensure_online_run(None, "chat")
        past = time.time() - 3600
        good = {"quality": {"value": 1.0, "passed": True}}
        store.write_results(
            run,
            None,
            "chat",
            [ItemResult(f"old{i}", None, "ok", output="fine", scores=good, ts=past) for i in range(30)],
        )
        upstream.script = Script(content="The answer is 4.")
        for i in range(6):
            assert chat(gateway.url, f"what is 2+2? {i}").status_code == 200
        assert wait_until(lambda: evaluator.counts["scored"] >= 6, timeout=30)
        assert wait_until(lambda: len(store.all_items(run)) >= 36, timeout=30)
        item = next(i for i in store.all_items(run) if not i["item_key"].startswith("old"))
        assert item["output"] == "The answer is 4." and item["request_id"] == item["item_key"]
        assert item["scores"]["refusal"]["passed"] is True and item["scores"]["quality"]["value"] == 1.0
        # Now the model starts refusing: quality drops and the SLI says so.
        upstream.script = Script(content="I'm sorry, but I can't help with that.")
        for i in range(14):
            assert chat(gateway.url, f"what is 3+3? {i}").status_code == 200
        assert wait_until(lambda: evaluator.counts["scored"] >= 20, timeout=30)

        def degraded() -> float | None:
            status = httpx.get(gateway.url + "/admin/slo", timeout=30).json()
            objective = next(o for o in status["data"] if o["name"] == "chat-quality")
            current = objective["current"]
            return None if current is None else float(current)

        assert wait_until(lambda: (degraded() or 0) > 0.5, timeout=30), degraded()
        status = httpx.get(gateway.url + "/admin/slo", timeout=30).json()
        objective = next(o for o in status["data"] if o["name"] == "chat-quality")
        assert objective["meets_target"] is False and objective["state"] == "page"
        # ... and it goes out like any page: the alert evaluator opens an alert for it.
        from opsgate.slo.alerts import AlertStore

        alerts = AlertStore(store.store)
        alerts.reconcile([objective], time.time(), {})
        assert [(a["slo"], a["severity"], a["state"]) for a in alerts.list()] == [("chat-quality", "page", "firing")]
        ready = httpx.get(gateway.url + "/readyz", timeout=30).json()["eval_online"]
        assert ready["sampled"] >= 20 and ready["dropped_queue_full"] == 0
        # The online run is a run like any other: the admin API lists it.
        runs = httpx.get(gateway.url + "/admin/evals/runs", timeout=30).json()["data"]
        assert any(r["id"] == run and r["kind"] == "online" for r in runs)
    finally:
        gateway.server.stop()


def test_the_sampler_drops_and_counts_instead_of_slowing_the_gateway(upstream: FakeUpstream) -> None:
    gateway = start_gateway(online_config(upstream.base_url, max_per_second=2, queue_size=1))
    try:
        evaluator = gateway.app.state.gateway.online_eval
        for i in range(20):
            assert chat(gateway.url, f"hello {i}").status_code == 200
        counts = evaluator.counts
        assert counts["dropped_rate"] + counts["dropped_queue_full"] >= 10
        assert counts["sampled"] + counts["dropped_rate"] + counts["dropped_queue_full"] == 20
        # Evaluation calls are never sampled.
        before = counts["seen"], counts["sampled"] + counts["dropped_rate"] + counts["dropped_queue_full"]
        chat(gateway.url, "judge me", metadata={"purpose": "eval"})
        assert counts["sampled"] + counts["dropped_rate"] + counts["dropped_queue_full"] == before[1]
    finally:
        gateway.server.stop()


def test_quality_combines_the_checks() -> None:
    ok = {"refusal": {"passed": True}, "pii_leak": {"passed": True}, "toxicity": {"passed": True}}
    assert quality(ok, asked_json=False).value == 1.0
    assert quality({**ok, "json_valid": {"passed": False}}, asked_json=False).value == 1.0
    assert quality({**ok, "json_valid": {"passed": False}}, asked_json=True).value == 0.0
    assert quality({**ok, "refusal": {"passed": False}}, asked_json=False).details == {"failed": ["refusal"]}
    assert ANY_TENANT is not None


def test_the_queue_is_bounded_by_bytes_and_keeps_only_what_scoring_needs(upstream: FakeUpstream) -> None:
    from opsgate.evals.online_sample import INPUT_CHARS

    gateway = start_gateway(online_config(upstream.base_url, queue_bytes=64 * 1024))
    try:
        evaluator = gateway.app.state.gateway.online_eval
        upstream.script = Script(content="fine")
        release = threading.Event()
        score_batch = evaluator.score_batch

        async def slow_scorer(samples: list[Any]) -> None:  # a judge that cannot keep up
            await asyncio.to_thread(release.wait, 60)  # a thread: the test's event is set from another thread
            await score_batch(samples)

        evaluator.score_batch = slow_scorer
        for i in range(10):  # each sample holds ~24 KB (6,000 characters at up to 4 bytes): 2 fit in 64 KiB
            assert chat(gateway.url, f"{i} " + "x" * 6000).status_code == 200
            assert evaluator.held_bytes <= 64 * 1024
        counts = evaluator.counts
        assert counts["sampled"] == 2 and counts["dropped_queue_bytes"] == 8, counts
        release.set()
        assert wait_until(lambda: counts["scored"] == 2 and evaluator.held_bytes == 0, timeout=30)
        # A 1 MB prompt is queued as the INPUT_CHARS the judge reads (and the item stores), not as 2 MB of record.
        assert chat(gateway.url, "y" * 1_000_000).status_code == 200
        assert counts["sampled"] == 3 and counts["dropped_queue_bytes"] == 8, counts
        store = EvalStore(gateway.app.state.gateway.record_log.store)
        run = store.ensure_online_run(None, "chat")
        assert wait_until(lambda: len(store.all_items(run)) == 3, timeout=30)
        assert sorted(len(i["input"]) for i in store.all_items(run))[-1] == INPUT_CHARS
        ready = httpx.get(gateway.url + "/readyz", timeout=30).json()["eval_online"]
        assert ready["queue_bytes"] == 64 * 1024 and ready["dropped_queue_bytes"] == 8
    finally:
        gateway.server.stop()


def test_only_the_operator_and_the_judges_key_opt_out_with_purpose_eval(upstream: FakeUpstream, tmp_path: Any) -> None:
    from opsgate.auth.key_store import KeySpec, KeyStore
    from opsgate.domain.config import parse_config
    from opsgate.store.record_log import open_store
    from tests.support import Gateway

    admin = "bootstrap-admin-key-for-purpose-0123456789"
    url = f"sqlite:///{tmp_path}/requests.db"
    opened = open_store(url)
    keys = KeyStore(opened)
    tenant_key = keys.create(KeySpec(tenant="a", role="service"), "test").secret
    judge_key = keys.create(KeySpec(tenant="a", role="service", name="judge"), "test").secret  # a tenant's key
    opened.close()
    config = online_config(upstream.base_url, judge_api_key=judge_key)
    config["auth"] = {"enabled": True, "admin_key": admin}
    config["record"] = {"store": url, "journal_dir": str(tmp_path / "journal")}
    gateway = Gateway(parse_config(config), keep_record_config=True)
    gateway.server.start("/readyz")
    try:
        evaluator = gateway.app.state.gateway.online_eval
        assert wait_until(lambda: evaluator.judge_key_id is not None, timeout=30)

        def as_key(key: str, text: str) -> None:
            body = {"model": "chat", "messages": [{"role": "user", "content": text}], "metadata": {"purpose": "eval"}}
            headers = {"Authorization": f"Bearer {key}"}
            response = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
            assert response.status_code == 200

        for key in (admin, judge_key):  # the gateway's own evaluation calls: never scored
            as_key(key, "judge this")
        assert evaluator.counts["seen"] == 2 and evaluator.counts["sampled"] == 0
        for i in range(3):  # a tenant's client saying "eval" is still scored
            as_key(tenant_key, f"hide me {i}")
        assert evaluator.counts["sampled"] == 3
        store = EvalStore(gateway.app.state.gateway.record_log.store)
        assert wait_until(lambda: len(store.all_items("online:a:chat")) == 3, timeout=30)
    finally:
        gateway.server.stop()
