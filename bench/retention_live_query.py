"""The retention pass's query for expired online/shadow items: ``run_id IN (live runs)`` vs ``EXISTS``.

    nice -n 10 .venv/bin/python bench/retention_live_query.py [--items 200000] [--offline 0 20000] [--rounds 7]

One SQLite store made by this tree's migrations holds ``--items`` online items an hour old (none expired
under ``default_days: 30``) and, per scenario, ``--offline`` items of an offline run 60 days old (past the
cutoff, kept: not copies of traffic). The two statements (the old one, as before this change, and
``store.sql.expired_live_items``) take turns, order alternating every round, on the same connection;
reported: this thread's CPU ms and wall ms, median of the rounds, and the query plan of each. The
machine is shared: read the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine, write_json  # noqa: E402
from opsgate.domain.config import RetentionConfig  # noqa: E402
from opsgate.evals.store import EvalStore, ItemResult  # noqa: E402
from opsgate.store.record_log import open_store  # noqa: E402
from opsgate.store.sql import SqlRecordStore, expired_live_items, retention_conditions  # noqa: E402

OLD = (
    "SELECT run_id, item_key FROM eval_items WHERE {condition} AND run_id IN "
    "(SELECT id FROM eval_runs WHERE kind IN ('online', 'shadow')) LIMIT ?"
)


def fill(store: SqlRecordStore, run_id: str, count: int, ts: float) -> None:
    evals = EvalStore(store)
    for start in range(0, count, 5000):
        batch = [
            ItemResult(
                f"k{i:07d}",
                None,
                "ok",
                "x" * 200,
                "y" * 200,
                request_id=f"r{i}",
                ts=ts,
                scores={"quality": {"value": 1.0}},
            )
            for i in range(start, min(count, start + 5000))
        ]
        evals.write_results(run_id, "t1", "m1", batch)


def scenario(items: int, offline: int, rounds: int) -> dict[str, Any]:
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db")
        try:
            evals = EvalStore(store)
            fill(store, evals.ensure_online_run("t1", "m1"), items, now - 3600)
            if offline:
                fill(store, evals.create_run("t1", "m1", kind="offline"), offline, now - 60 * 86400)
            [(condition, params)] = retention_conditions(RetentionConfig(default_days=30), now)
            statements = {"run_id IN": OLD.format(condition=condition), "EXISTS": expired_live_items(condition)}
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in statements}
            plans = {}
            with store.connection() as conn:
                for name, sql in statements.items():
                    plans[name] = [str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, [*params, 1000])]
                for index in range(rounds + 1):
                    order = list(statements) if index % 2 else list(reversed(statements))
                    for name in order:
                        wall, cpu = time.perf_counter(), time.thread_time()
                        found = conn.execute(statements[name], [*params, 1000]).fetchall()
                        timing = ((time.perf_counter() - wall) * 1e3, (time.thread_time() - cpu) * 1e3)
                        assert found == []
                        if index:  # the first round warms the page cache
                            samples[name].append(timing)
        finally:
            store.close()
    row: dict[str, Any] = {
        name: {
            "cpu_ms": round(statistics.median(c for _, c in values), 3),
            "wall_ms": round(statistics.median(w for w, _ in values), 3),
            "plan": plans[name],
        }
        for name, values in samples.items()
    }
    row["EXISTS/IN cpu"] = round(row["EXISTS"]["cpu_ms"] / max(row["run_id IN"]["cpu_ms"], 1e-6), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--offline", type=int, nargs="+", default=[0, 20_000])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", default="retention_live_query.json", help="file name under bench/results/")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "items": args.items, "rounds": args.rounds, "scenarios": {}}
    print("| expired offline items | run_id IN: CPU / wall ms | EXISTS: CPU / wall ms | EXISTS/IN CPU |")
    print("|---|---|---|---|")
    for offline in args.offline:
        row = scenario(args.items, offline, args.rounds)
        result["scenarios"][str(offline)] = row
        old, new = row["run_id IN"], row["EXISTS"]
        print(
            f"| {offline} | {old['cpu_ms']} / {old['wall_ms']} | {new['cpu_ms']} / {new['wall_ms']}"
            f" | {row['EXISTS/IN cpu']} |"
        )
    for offline, row in result["scenarios"].items():
        print(offline, {name: row[name]["plan"] for name in ("run_id IN", "EXISTS")})
    print(f"written to {write_json(args.output, result)}")


if __name__ == "__main__":
    main()
