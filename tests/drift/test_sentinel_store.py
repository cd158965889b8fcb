"""The sentinel's schedule, verdicts and golden prompts on both real stores, with a scripted ``/v1``
(a Poster that answers like the gateway), so the cases are exact: the lease lets one replica run the
schedule, K decides a change, an edited prompt is re-baselined alone, dataset items are golden prompts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from opsgate.domain.config import GatewayConfig, parse_config
from opsgate.drift.sentinel_compare import unified_diff
from opsgate.drift.sentinel_service import SentinelService
from opsgate.drift.sentinel_store import SentinelStore
from opsgate.evals.client import Meta, TransportFailure
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore
from tests.store.conftest import fresh_pg_schema

ANSWERS = {"a": "Paris is the capital of France.", "b": "Four.", "c": "Blue."}


class ScriptedGateway:
    """Answers ``/v1/chat/completions`` like the gateway: the answer of the prompt's last word, the
    deployment it was pinned to, a model and a fingerprint."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, str]] = {}  # deployment -> prompt -> answer
        self.fingerprint = "fp_1"
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.down = False

    async def post(self, path: str, body: bytes, headers: dict[str, str], limit_s: float) -> tuple[int, Meta, bytes]:
        data = orjson.loads(body)
        label = headers["x-opsgate-pin-deployment"]
        self.calls.append((label, data))
        if self.down:
            raise TransportFailure("connection refused")
        prompt = data["messages"][-1]["content"]
        answer = self.answers.get(label, {}).get(prompt, ANSWERS.get(prompt, "?"))
        reply = {
            "model": "vendor-model",
            "system_fingerprint": self.fingerprint,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        }
        return 200, {"x-request-id": f"req-{len(self.calls)}", "x-opsgate-deployment": label}, orjson.dumps(reply)

    async def close(self) -> None:
        return None


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[SqlRecordStore]:
    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path}/requests.db")
        yield opened
        opened.close()
        return
    with fresh_pg_schema("opsgate_sentinel") as url:
        opened = open_store(url)
        yield opened
        opened.close()


def config(**sentinel: Any) -> GatewayConfig:
    deployment = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "vendor-model"}
    models = sentinel.pop("models", {"m": {"prompts": [{"id": key, "prompt": key} for key in ANSWERS]}})
    return parse_config(
        {
            "models": [{"name": "m", "deployments": [deployment, deployment]}],
            "sentinel": {"enabled": True, "first_run_seconds": 0, "jitter_seconds": 0, "interval_seconds": 600,
                         "models": models, **sentinel},
            "slo": {"objectives": [{"name": "m-change", "sli": "behaviour_change", "filter": {"model": "m"}}]},
        }
    )  # fmt: skip


def service(cfg: GatewayConfig, store: SqlRecordStore, gateway: ScriptedGateway) -> SentinelService:
    made = SentinelService(cfg, lambda: store)
    made.poster = gateway
    return made


def measurements(store: SqlRecordStore) -> list[float]:
    with store.connection() as conn:
        rows = store.execute(conn, "SELECT value FROM slo_measurements WHERE slo = 'm-change' ORDER BY ts")
        return [float(r[0]) for r in rows.fetchall()]


def test_one_replica_runs_the_schedule_and_a_successor_continues_it(store: SqlRecordStore) -> None:
    gateway = ScriptedGateway()
    first, second = service(config(), store, gateway), service(config(), store, gateway)
    now = time.time()
    runs = asyncio.run(first.tick(now))
    assert [(r["deployment"], r["status"], r["kind"]) for r in runs] == [
        ("m#0", "baseline", "scheduled"),
        ("m#1", "baseline", "scheduled"),
    ]
    assert first.leader and first.next_run is not None and first.next_run >= now + 600
    assert asyncio.run(second.tick(now + 1)) == [] and not second.leader  # the lease is taken
    assert len(gateway.calls) == 6
    asyncio.run(first.stop())  # gives the lease up
    assert asyncio.run(second.tick(now + 2)) == [] and second.leader  # leads, but the next run is not due
    assert second.next_run == first.next_run  # the schedule continues where the old holder left it
    runs = asyncio.run(second.tick(first.next_run + 1))
    assert [r["status"] for r in runs] == ["unchanged", "unchanged"]
    assert asyncio.run(first.tick(now + 3)) == [] and not first.leader  # second holds it now
    assert measurements(store) == [0.0, 0.0]  # compared runs feed the objective; baselines do not


def test_k_changed_answers_make_a_change(store: SqlRecordStore) -> None:
    gateway = ScriptedGateway()
    sentinel = service(config(min_changed_prompts=2), store, gateway)
    asyncio.run(sentinel.run_now())
    gateway.answers["m#1"] = {"a": "I cannot answer questions about cities."}
    runs = {r["deployment"]: r for r in asyncio.run(sentinel.run_now())}
    assert runs["m#1"]["status"] == "unchanged" and runs["m#1"]["changed"] == 1  # below K
    assert runs["m#1"]["share"] == 0.0 and runs["m#1"]["summary"]["raw_share"] == pytest.approx(1 / 3)
    gateway.answers["m#1"]["b"] = "Five, if you ask me."
    runs = {r["deployment"]: r for r in asyncio.run(sentinel.run_now())}
    assert runs["m#1"]["status"] == "changed" and runs["m#1"]["share"] == pytest.approx(2 / 3)
    assert runs["m#0"]["status"] == "unchanged"
    assert measurements(store)[-1] == pytest.approx(2 / 3)  # the alias-wide objective: the worst deployment
    assert sentinel.counts["changes_seen"] == 1


def test_an_edited_prompt_is_rebaselined_alone(store: SqlRecordStore) -> None:
    gateway = ScriptedGateway()
    asyncio.run(service(config(), store, gateway).run_now())
    edited = {"m": {"prompts": [{"id": "a", "prompt": "b"}, {"id": "b", "prompt": "b"}, {"id": "c", "prompt": "c"}]}}
    runs = asyncio.run(service(config(models=edited), store, gateway).run_now(deployment="m#0"))
    detail = SentinelStore(store).get_run(runs[0]["id"])
    assert detail is not None
    assert {i["prompt_id"]: i["status"] for i in detail["items"]} == {"a": "baseline", "b": "same", "c": "same"}
    assert runs[0]["status"] == "unchanged"
    assert SentinelStore(store).baselines("m", "m#0")["a"].answer == "Four."


def test_golden_prompts_from_an_evaluation_dataset(store: SqlRecordStore) -> None:
    from opsgate.evals.dataset import parse_item
    from opsgate.evals.store import EvalStore

    gateway = ScriptedGateway()
    models = {"m": {"dataset": "golden", "dataset_items": 2, "prompts": [{"id": "c", "prompt": "c"}]}}
    sentinel = service(config(models=models), store, gateway)
    missing = asyncio.run(sentinel.run_now(deployment="m#0"))
    assert missing[0]["status"] == "failed" and "does not exist" in missing[0]["summary"]["error"]
    items = [parse_item({"prompt": key, "id": f"q{key}"}) for key in ("a", "b")] + [parse_item({"prompt": "x"})]
    items[1] = parse_item({"prompt": "b", "id": "qa"})  # a repeated id must not collide
    EvalStore(store).save_dataset(None, "golden", items)
    EvalStore(store).save_dataset("tenant-a", "golden", [parse_item({"prompt": "tenant secret"})])
    runs = asyncio.run(sentinel.run_now(deployment="m#0"))
    detail = SentinelStore(store).get_run(runs[0]["id"])
    assert detail is not None
    assert sorted(i["prompt_id"] for i in detail["items"]) == ["c", "golden:1", "golden:qa"]
    assert all("tenant secret" not in str(call) for _, call in gateway.calls)  # only the operator's datasets


def test_an_unreachable_gateway_is_a_failed_run_not_a_change(store: SqlRecordStore) -> None:
    gateway = ScriptedGateway()
    sentinel = service(config(), store, gateway)
    asyncio.run(sentinel.run_now())
    gateway.down = True
    runs = asyncio.run(sentinel.run_now())
    assert [(r["status"], r["failed"]) for r in runs] == [("failed", 3), ("failed", 3)]
    assert measurements(store) == []  # a failed run says nothing about behaviour
    gateway.down = False
    assert [r["status"] for r in asyncio.run(sentinel.run_now())] == ["unchanged", "unchanged"]


def test_hostile_answers_are_stored_safely(store: SqlRecordStore) -> None:
    gateway = ScriptedGateway()
    sentinel = service(config(), store, gateway)
    asyncio.run(sentinel.run_now(deployment="m#0"))
    gateway.answers["m#0"] = {"a": "nul \x00 here " + "x" * 300_000, "b": "\u202e right-to-left \U0001f600"}
    runs = asyncio.run(sentinel.run_now(deployment="m#0"))
    assert runs[0]["status"] == "changed"
    detail = SentinelStore(store).get_run(runs[0]["id"])
    assert detail is not None
    items = {i["prompt_id"]: i for i in detail["items"]}
    assert "\x00" not in items["a"]["answer"] and len(items["a"]["diff"]) <= 20_100


def test_unified_diff_names_both_sides() -> None:
    diff = unified_diff("line one\nline two", "line one\nline 2")
    assert diff.splitlines()[:2] == ["--- baseline", "+++ now"]
    assert "-line two" in diff and "+line 2" in diff


def test_the_docs_config_example_is_valid(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    from pathlib import Path

    import yaml

    from opsgate.domain.config import load_config

    docs = (Path(__file__).parents[2] / "docs" / "sentinel.md").read_text()
    example = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", docs, flags=re.S)[0])
    deployment = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-4o"}
    example["models"] = [{"name": "gpt-4o", "deployments": [deployment, deployment]}]
    example["record"]["store"] = f"sqlite:///{tmp_path}/requests.db"
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(example).replace("'${OPSGATE_SENTINEL_KEY}'", "${OPSGATE_SENTINEL_KEY}"))
    monkeypatch.setenv("OPSGATE_SENTINEL_KEY", "sk-sentinel-" + "k" * 32)
    loaded = load_config(path)
    assert loaded.sentinel.enabled and loaded.sentinel.models["gpt-4o"].dataset == "golden-gpt4o"
    assert loaded.sentinel.api_key is not None and loaded.sentinel.api_key.get_secret_value().startswith("sk-")
    assert [o.sli for o in loaded.slo.objectives] == ["behaviour_change", "behaviour_change"]


@pytest.mark.parametrize(
    "bad",
    [
        {"models": {"m": {"prompts": [{"id": "a", "prompt": "x\x00"}]}}},
        {"models": {"m": {"prompts": [{"id": "a", "prompt": "x" * 8001}]}}},
        {"models": {"m": {"prompts": [{"id": "a"}]}}},
        {"models": {"m": {"prompts": [{"id": "a", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}]}}},
        {"models": {"m": {"prompts": [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]}}},
        {"models": {"m": {"prompts": [{"id": "a b", "prompt": "x"}]}}},
        {"models": {"m": {"prompts": [{"id": f"p{i}", "prompt": "x"} for i in range(51)]}}},
        {"models": {"m": {}}},
        {"models": {}},
        {"models": {"m": {"dataset": "d"}}, "similarity_threshold": float("nan")},
        {"models": {"m": {"dataset": "d"}}, "interval_seconds": 1},
        {"models": {"m": {"dataset": "d"}}, "surprise": True},
    ],
)
def test_bad_sentinel_configs_are_refused(bad: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from opsgate.domain.sentinel_config import SentinelConfig

    with pytest.raises(ValidationError):
        SentinelConfig.model_validate({"enabled": True, **bad})


def test_a_rebaseline_while_the_deployment_is_down_keeps_the_old_baselines(store: SqlRecordStore) -> None:
    gateway = ScriptedGateway()
    sentinel = service(config(), store, gateway)
    asyncio.run(sentinel.run_now(deployment="m#0"))
    gateway.down = True
    runs = asyncio.run(sentinel.run_now(deployment="m#0", rebaseline=True))
    assert runs[0]["status"] == "failed"
    assert set(SentinelStore(store).baselines("m", "m#0")) == set(ANSWERS)
    gateway.down = False
    gateway.answers["m#0"] = {"a": "Lyon, I believe, though I may be wrong about this."}
    runs = asyncio.run(sentinel.run_now(deployment="m#0"))
    assert runs[0]["status"] == "changed"  # compared with the kept baselines, not silently re-baselined
    runs = asyncio.run(sentinel.run_now(deployment="m#0", rebaseline=True))
    assert runs[0]["status"] == "baseline" and runs[0]["kind"] == "baseline"
    assert SentinelStore(store).baselines("m", "m#0")["a"].answer.startswith("Lyon")


@pytest.mark.parametrize(
    ("sentinel", "message"),
    [
        ({"models": {"Gold": {"prompts": [{"id": "a", "prompt": "hi"}]}}}, "no model named 'Gold'"),
        ({"models": {"gold": {"prompts": [{"id": "a", "prompt": "hi"}], "deployments": ["gold#9"]}}}, "gold#9"),
        (
            {"min_changed_prompts": 3, "models": {"gold": {"prompts": [{"id": "a", "prompt": "hi"}]}}},
            "no change could ever be reported",
        ),
    ],
)
def test_a_sentinel_that_would_watch_nothing_is_refused_at_load(sentinel: dict[str, Any], message: str) -> None:
    """Found by the outside probe: these passed `opsgate config check` and then watched nothing."""
    from opsgate.domain.config import ConfigError, parse_config

    deployment = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    config = {
        "models": [{"name": "gold", "deployments": [deployment, deployment]}],
        "sentinel": {"enabled": True, **sentinel},
    }
    with pytest.raises((ConfigError, ValueError), match=message):
        parse_config(config)
