"""Erasure and a retention pass over many online evaluation items, with migration 0014's indexes and without.

    nice -n 10 .venv/bin/python bench/erasure_retention.py [--items 200000] [--rounds 5] [--stores sqlite postgres]

Migration 0014 (da99c4b) indexed ``eval_items`` by ``request_id`` and by ``ts``. Without them,
``erase_user`` scanned the table for a user's copies (on SQLite inside the erasure's write transaction) and a
retention pass scanned it once per rule. Per store kind, two stores are made by this tree's migrations and
filled alike with ``--items`` online items (400 B of text, one score each, an hour old, so none expired);
in one of them the two indexes are then dropped, which is the schema before da99c4b (the migration changed
nothing else). The two stores then take turns, the order alternating every round: ``erase_user`` of a user
with no records, and ``delete_expired`` with ``default_days: 30`` (nothing to delete). Reported: wall ms
(most of the work is the database's: PostgreSQL runs in its own process) and this thread's CPU ms,
median of the rounds, and the ratio with/without. PostgreSQL: a scratch schema in the local ``test``
database, dropped afterwards. The machine is shared: read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine, write_json  # noqa: E402
from opsgate.domain.config import RetentionConfig  # noqa: E402
from opsgate.evals.store import EvalStore, ItemResult  # noqa: E402
from opsgate.store.record_log import open_store  # noqa: E402
from opsgate.store.sql import SqlRecordStore  # noqa: E402
from record_writer import pg_schema  # noqa: E402

INDEXES = ("eval_items_request", "eval_items_ts")
BATCH = 5000


def fill(store: SqlRecordStore, items: int, now: float, progress: Progress, label: str) -> None:
    """``items`` online evaluation items of one run, an hour old, one score each."""
    evals = EvalStore(store)
    run_id = evals.ensure_online_run("t1", "m1")
    task = progress.add_task(f"fill {label}", total=items)
    for start in range(0, items, BATCH):
        batch = [
            ItemResult(
                item_key=f"k{i:07d}",
                idx=None,
                status="ok",
                input="x" * 200,
                output="y" * 200,
                request_id=f"r{i}",
                ts=now - 3600,
                scores={"quality": {"value": 1.0}},
            )
            for i in range(start, min(items, start + BATCH))
        ]
        evals.write_results(run_id, "t1", "m1", batch)
        progress.advance(task, len(batch))


def drop_indexes(store: SqlRecordStore) -> None:
    """Take migration 0014's indexes away: the schema as it was before da99c4b."""
    with store.connection() as conn, store.transaction(conn):
        for name in INDEXES:
            conn.execute(f"DROP INDEX {name}")


def _timed(action: Callable[[SqlRecordStore], object], store: SqlRecordStore) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    action(store)
    return (time.perf_counter() - wall) * 1e3, (time.thread_time() - cpu) * 1e3


def compare(url_with: str, url_without: str, items: int, rounds: int, progress: Progress) -> dict[str, Any]:
    """Fill both stores, drop the indexes in one, then time each operation on both, turn by turn."""
    now = time.time()
    stores = {"with 0014": open_store(url_with), "without 0014": open_store(url_without)}
    try:
        for label, store in stores.items():
            fill(store, items, now, progress, label)
        drop_indexes(stores["without 0014"])
        retention = RetentionConfig(default_days=30)
        operations: dict[str, Callable[[SqlRecordStore], object]] = {
            "erase_user (no records)": lambda store: store.erase_user("nobody", "bench"),
            "retention pass, nothing expired": lambda store: store.delete_expired(retention, now=now),
        }
        out: dict[str, Any] = {}
        for op, action in operations.items():
            samples: dict[str, list[tuple[float, float]]] = {label: [] for label in stores}
            for index in range(rounds + 1):
                order = list(stores) if index % 2 else list(reversed(stores))
                for label in order:
                    timing = _timed(action, stores[label])
                    if index:  # the first round warms the caches
                        samples[label].append(timing)
            row: dict[str, Any] = {
                label: {
                    "wall_ms": round(statistics.median(w for w, _ in values), 2),
                    "cpu_ms": round(statistics.median(c for _, c in values), 2),
                }
                for label, values in samples.items()
            }
            row["with/without wall"] = round(row["with 0014"]["wall_ms"] / row["without 0014"]["wall_ms"], 4)
            out[op] = row
            progress.console.print(f"{op}: {row}")
        return out
    finally:
        for store in stores.values():
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stores", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    parser.add_argument("--output", default="erasure_retention.json", help="file name under bench/results/")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "items": args.items, "rounds": args.rounds, "stores": {}}
    with Progress() as progress:
        if "sqlite" in args.stores:
            with tempfile.TemporaryDirectory() as tmp:
                urls = (f"sqlite:///{tmp}/with.db", f"sqlite:///{tmp}/without.db")
                result["stores"]["sqlite"] = compare(*urls, args.items, args.rounds, progress)
        if "postgres" in args.stores:
            with pg_schema() as url_with, pg_schema() as url_without:
                result["stores"]["postgres"] = compare(url_with, url_without, args.items, args.rounds, progress)
    path = write_json(args.output, result)
    print("| store | operation | with 0014 wall / CPU ms | without wall / CPU ms | with/without wall |")
    print("|---|---|---|---|---|")
    for kind, ops in result["stores"].items():
        for op, row in ops.items():
            new, old = row["with 0014"], row["without 0014"]
            print(
                f"| {kind} | {op} | {new['wall_ms']} / {new['cpu_ms']} | {old['wall_ms']} / {old['cpu_ms']}"
                f" | {row['with/without wall']} |"
            )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
