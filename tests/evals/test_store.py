"""The evaluation tables on SQLite and PostgreSQL: results replace earlier attempts, scores aggregate by window."""

from __future__ import annotations

import time

from opsgate.evals.dataset import parse_item
from opsgate.evals.runner import summarise_run
from opsgate.evals.store import ANY_TENANT, EvalStore, ItemResult


def test_results_scores_windows_and_online_runs(evals: EvalStore) -> None:
    version, _ = evals.save_dataset(None, "d", [parse_item({"prompt": f"p{i}"}) for i in range(3)])
    run = evals.create_run("t", "m", dataset_id=version.id, settings={"scorers": [{"name": "exact"}]})
    now = time.time()
    first = [
        ItemResult(
            f"{i:06d}",
            i,
            "failed" if i == 2 else "ok",
            output=f"o{i}",
            error="boom" if i == 2 else None,
            scores={"exact": {"value": float(i == 0), "passed": i == 0, "details": {"n": i}}},
            ts=now,
        )
        for i in range(3)
    ]
    evals.write_results(run, "t", "m", first)
    assert evals.finished_keys(run) == {"000000", "000001"}
    retry = ItemResult("000002", 2, "ok", output="fixed", scores={"exact": {"value": 1.0, "passed": True}}, ts=now)
    evals.write_results(run, "t", "m", [retry])  # a resumed attempt replaces the failed one
    items = evals.all_items(run)
    assert [i["status"] for i in items] == ["ok", "ok", "ok"] and items[2]["output"] == "fixed"
    assert items[0]["scores"]["exact"] == {"value": 1.0, "passed": True, "details": {"n": 0}}
    summary = summarise_run(evals, run)
    assert summary["scores"]["exact"]["pass_rate"] == 2 / 3 and summary["failed"] == 0
    assert evals.get_run("other", run) is None and evals.get_run("t", run) is not None
    online = evals.ensure_online_run("t", "m")
    assert evals.ensure_online_run("t", "m") == online  # created once
    evals.write_results(online, "t", "m", [ItemResult("req-1", None, "ok", scores={"quality": {"value": 0.0}}, ts=now)])
    assert evals.score_mean("m", "quality", now - 10, now + 10, ANY_TENANT) == (0.0, 1)
    assert evals.score_mean("m", "exact", now - 10, now + 10, "t", kind=None) == (2 / 3, 3)
    assert evals.score_mean("m", "quality", now - 10, now + 10, "other") == (None, 0)
    evals.add_scores(run, "000001", "t", "m", {"pairwise": {"value": 0.5, "passed": None, "details": {}}})
    assert evals.all_items(run)[1]["scores"]["pairwise"]["value"] == 0.5
