"""What releases cost on the request path, how fast replicas see a change, and what the statistics cost.

In one process, no network (about 20 s):
  1. the release stage's ``before`` on a validated request, timed per call (median and p99 of
     batches) in four cases: no release and no prompt (the common path: one dict lookup), an alias
     with an active release (deployment weights and parameters applied), a 90/10 canary (sticky
     hash pick), and a client prompt from the cache (sandboxed Jinja2 render of a two-variable
     template);
  2. a cache refresh on SQLite: the poll when nothing changed (one row) and a full reload;
  3. how long a change takes to be seen by a polling cache (poll interval 0.5 s): measured from the
     change's commit to the swap, over 20 changes;
  4. an experiment report (per-arm metrics from 20,000 records, every test, the sample-size plan).

Writes bench/results/releases.json.

    .venv/bin/python bench/releases.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from opsgate.domain.config import parse_config
from opsgate.domain.context import RequestContext
from opsgate.pipeline.release import ReleaseStage
from opsgate.pipeline.validation import ValidationStage
from opsgate.releases import metrics
from opsgate.releases.cache import ReleaseCache
from opsgate.releases.prompts import PromptStore
from opsgate.releases.store import ReleaseStore
from opsgate.store.record_log import open_store

RESULTS = Path(__file__).parent / "results" / "releases.json"


def _time_stage(
    stage: ReleaseStage, validation: ValidationStage, body: dict[str, Any], calls: int = 20_000
) -> dict[str, float]:
    raw = orjson.dumps(body)

    async def run() -> list[float]:
        samples: list[float] = []
        batch = 200
        for _ in range(calls // batch):
            contexts = []
            for _ in range(batch):
                ctx = RequestContext(endpoint="chat", raw_body=raw, headers={}, request_id="req-1")
                await validation.before(ctx)
                contexts.append(ctx)
            start = time.perf_counter()
            for ctx in contexts:
                await stage.before(ctx)
            samples.append((time.perf_counter() - start) / batch * 1e6)
        return samples

    samples = asyncio.run(run())
    samples.sort()
    return {
        "median_us": round(statistics.median(samples), 3),
        "p99_batch_us": round(samples[int(len(samples) * 0.99)], 3),
    }


def main() -> None:
    directory = tempfile.mkdtemp(prefix="opsgate-bench-releases-")
    url = f"sqlite:///{directory}/requests.db"
    store = open_store(url)
    config = parse_config(
        {
            "models": [
                {
                    "name": "plain",
                    "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
                },
                {
                    "name": "released",
                    "deployments": [
                        {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "a"},
                        {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "b"},
                    ],
                },
                {
                    "name": "canaried",
                    "deployments": [
                        {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "a"},
                        {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "b"},
                    ],
                },
            ]
        }
    )
    prompts, releases = PromptStore(store), ReleaseStore(store)
    prompts.create(None, "support", [{"role": "system", "content": "Help {{ who }} with {{ what }}."}], ["who", "what"])
    prompts.set_label(None, "support", "production", 1, "bench")
    spec = {"deployments": {"released#0": 1.0}, "prompt": None, "parameters": {"temperature": 0.3}}
    one = releases.create("released", spec, None, "bench")
    releases.activate("released", one.id, "bench")
    base = releases.create("canaried", {**spec, "deployments": {"canaried#0": 1.0}}, None, "bench")
    candidate = releases.create("canaried", {**spec, "deployments": {"canaried#1": 1.0}}, None, "bench")
    releases.activate("canaried", base.id, "bench")
    releases.canary("canaried", candidate.id, 10, "bench")

    cache = ReleaseCache(lambda: store, 0.5)
    cache.refresh(force=True)
    stage = ReleaseStage(cache)
    validation = ValidationStage(config)
    message = [{"role": "user", "content": "hello"}]
    prompt_body = {
        "model": "plain",
        "messages": message,
        "metadata": {"prompt": "support@production", "variables": {"who": "Ada", "what": "billing"}},
    }
    cache.prompt_resolve(None, "support@production")  # first use reads the store; later ones are cached
    results: dict[str, Any] = {
        "stage": {
            "no_release_no_prompt": _time_stage(stage, validation, {"model": "plain", "messages": message}),
            "active_release": _time_stage(stage, validation, {"model": "released", "messages": message, "user": "u"}),
            "canary_90_10": _time_stage(stage, validation, {"model": "canaried", "messages": message, "user": "u"}),
            "client_prompt_cached_render": _time_stage(stage, validation, prompt_body),
            "validation_stage_for_scale": None,
        }
    }

    # The refresh: a poll that finds nothing new, and a full reload.
    polls = []
    for _ in range(200):
        start = time.perf_counter()
        cache.refresh()
        polls.append((time.perf_counter() - start) * 1e3)
    reloads = []
    for _ in range(50):
        start = time.perf_counter()
        cache.refresh(force=True)
        reloads.append((time.perf_counter() - start) * 1e3)
    results["refresh_ms"] = {"unchanged_poll_median": round(statistics.median(polls), 3),
                             "full_reload_median": round(statistics.median(reloads), 3)}  # fmt: skip

    # Propagation: a cache polling every 0.5 s in its own thread; time from commit to swap.
    watcher = ReleaseCache(lambda: store, 0.5)
    watcher.refresh(force=True)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            watcher.refresh()
            time.sleep(0.5)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    delays = []
    for n in range(20):
        clock = watcher.clock
        committed = time.perf_counter()
        releases.rollback("canaried", "bench") if n % 2 == 0 else releases.canary("canaried", candidate.id, 10, "bench")
        while watcher.clock == clock:
            time.sleep(0.005)
        delays.append(time.perf_counter() - committed)
        time.sleep(0.1 + (n % 5) * 0.07)  # land at different points of the poll interval
    stop.set()
    thread.join()
    results["propagation_seconds"] = {
        "poll_interval": 0.5,
        "median": round(statistics.median(delays), 3),
        "max": round(max(delays), 3),
    }

    # An experiment report over 20,000 records (two arms, 10% canary).
    state = releases.state("canaried")
    assert state is not None and state.experiment is not None
    now = time.time()
    rows = []
    for i in range(20_000):
        arm = "canary" if i % 10 == 0 else "control"
        rows.append(
            {
                "id": f"r{i}", "ts": now - 60 + i * 0.002, "endpoint": "chat", "model": "canaried",
                "status": 500 if i % 97 == 0 else 200, "latency_ms": 100.0 + (i % 50), "ttft_ms": 20.0,
                "prompt_tokens": 10, "completion_tokens": 20, "cost": 0.0001,
                "tags": {"experiment": state.experiment, "arm": arm}, "experiment": state.experiment, "arm": arm,
            }
        )  # fmt: skip
    store.write_batch(rows)
    experiment = releases.experiment(state.experiment)
    assert experiment is not None
    experiment["started_at"] = now - 120
    start = time.perf_counter()
    report = metrics.report(store, experiment)
    results["experiment_report_ms_20k_records"] = round((time.perf_counter() - start) * 1e3, 1)
    results["experiment_report_arms"] = {k: v["requests"] for k, v in report["arms"].items()}

    # For scale: the validation stage (parse and check the body) on the same request.
    async def validate(n: int = 20_000) -> float:
        raw = orjson.dumps({"model": "plain", "messages": message})
        start = time.perf_counter()
        for _ in range(n):
            await validation.before(RequestContext(endpoint="chat", raw_body=raw, headers={}))
        return (time.perf_counter() - start) / n * 1e6

    results["stage"]["validation_stage_for_scale"] = {"mean_us": round(asyncio.run(validate()), 3)}
    results["python"] = sys.version.split()[0]
    store.close()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
