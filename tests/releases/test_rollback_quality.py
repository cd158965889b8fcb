"""The rollback watcher's quality rule on real stores: a canary significantly worse on guard flags goes,
one that is merely noisy stays; the experiment start/stop API; metrics ignore a client's look-alike tags."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from opsgate.domain.config import parse_config
from opsgate.releases import metrics
from opsgate.releases.rollback import ACTOR, AutoRollback
from opsgate.releases.store import ReleaseStore
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore

SPEC: dict[str, Any] = {"deployments": None, "prompt": None, "parameters": {}}


def _records(store: SqlRecordStore, experiment: str, arm: str, n: int, flagged_every: int, start: int) -> None:
    now = time.time()
    rows = []
    for i in range(n):
        tags: dict[str, Any] = {"experiment": experiment, "arm": arm}
        if flagged_every and i % flagged_every == 0:
            tags["guard"] = {"output": [{"scanner": "toxicity", "verdict": "fail", "score": 0.9}]}
        rows.append(
            {"id": f"r{start + i}", "ts": now, "endpoint": "chat", "model": "up", "status": 200,
             "latency_ms": 50.0, "tags": tags, "experiment": experiment, "arm": arm}
        )  # fmt: skip
    store.write_batch(rows)


def _canary(store: SqlRecordStore) -> str:
    releases = ReleaseStore(store)
    base = releases.create("up", SPEC, None, "t")
    candidate = releases.create("up", SPEC, None, "t")
    releases.activate("up", base.id, "t")
    state = releases.canary("up", candidate.id, 50, "t")
    assert state.experiment is not None
    return state.experiment


def test_guard_flags_significantly_worse_roll_the_canary_back(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    config = parse_config({"releases": {"auto_rollback": {"min_requests": 10}}})
    watcher = AutoRollback(config, lambda: store)
    experiment = _canary(store)
    _records(store, experiment, "control", 400, 0, 0)  # no flags
    _records(store, experiment, "canary", 20, 2, 1000)  # too few yet to judge
    assert watcher.check() == []
    _records(store, experiment, "canary", 400, 4, 2000)  # a quarter flagged
    [event] = watcher.check()
    assert event["rule"] == "guard_flag_rate" and event["p_value"] <= 0.05
    state = ReleaseStore(store).state("up")
    assert state is not None and state.arms is None
    assert ReleaseStore(store).history("up")[0]["actor"] == ACTOR
    store.close()


def test_noise_does_not_roll_back_and_client_tags_do_not_count(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    watcher = AutoRollback(parse_config({}), lambda: store)
    experiment = _canary(store)
    _records(store, experiment, "control", 300, 20, 0)
    _records(store, experiment, "canary", 300, 18, 1000)
    assert watcher.check() == []
    # A client's metadata naming the experiment and an arm is not the gateway's tag.
    store.write_batch(
        [
            {"id": f"x{i}", "ts": time.time(), "endpoint": "chat", "model": "up", "status": 500,
             "metadata": {"experiment": experiment, "arm": "canary"}}
            for i in range(50)
        ]
    )  # fmt: skip
    found = ReleaseStore(store).experiment(experiment)
    assert found is not None
    report = metrics.report(store, found)
    assert report["arms"]["canary"]["requests"] == 300 and report["arms"]["canary"]["errors"] == 0
    assert "guard_flag_rate" in report["comparisons"]["canary"] and report["plan"]["sequential_per_arm"] > 0
    store.close()


def test_ab_experiment_start_and_stop(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    releases = ReleaseStore(store)
    a, b = releases.create("up", SPEC, None, "t"), releases.create("up", SPEC, None, "t")
    state = releases.start_experiment(
        "up", [{"arm": "a", "release": a.id, "weight": 50}, {"arm": "b", "release": str(b.number), "weight": 50}],
        {}, "t",
    )  # fmt: skip
    assert state.arms is not None and [arm["release"] for arm in state.arms] == [a.id, b.id]
    stopped = releases.stop_experiment("up", "t", {"why": "done"})
    assert stopped.arms is None and stopped.revision == state.revision + 1
    assert state.experiment is not None
    found = releases.experiment(state.experiment)
    assert found is not None and found["status"] == "stopped" and found["verdict"] == {"why": "done"}
    store.close()


def test_online_eval_scores_significantly_worse_roll_the_canary_back(tmp_path: Path) -> None:
    from opsgate.evals.store import EvalStore, ItemResult

    store = open_store(f"sqlite:///{tmp_path}/r.db")
    watcher = AutoRollback(parse_config({}), lambda: store)
    experiment = _canary(store)
    _records(store, experiment, "control", 200, 0, 0)
    _records(store, experiment, "canary", 200, 0, 1000)
    evals = EvalStore(store)
    run = evals.ensure_online_run(None, "up")
    items = [
        ItemResult(f"r{i}", None, "ok", request_id=f"r{i}", scores={"judge": {"value": 0.9 if i < 1000 else 0.2}})
        for i in [*range(0, 200), *range(1000, 1200)]
    ]
    evals.write_results(run, None, "up", items)
    # A shadow run's scores for the same requests are not the live arms' (they would flip the verdict).
    shadow = f"shadow:{experiment}:-"
    evals.create_run(None, "up", kind="shadow", run_id=shadow)
    flipped = [
        ItemResult(f"r{i}", None, "ok", request_id=f"r{i}", scores={"judge": {"value": 1.0}}) for i in range(1000, 1200)
    ]
    evals.write_results(shadow, None, "up", flipped)
    [event] = watcher.check()
    assert event["rule"] == "score:judge" and event["diff"] < 0
    store.close()
