"""Drift engine cost: summarising records, and a check over a 30-day window.

  1. Summarise ``--records`` (default 1,000,000) synthetic chat records spread over 30 days through
     the collector: ``write`` (what the request path pays: an enqueue) and the summariser thread
     (features, py3langid on the configured sample, hourly buckets, flushes to the store), with the
     embedding thread running the real MiniLM within its per-second budget. Reports records/s.
  2. Time one drift check over 30 days of hourly summaries (720 reference buckets + 24 current),
     each bucket with full 64-vector reservoirs per side (as a busy gateway has): the read, the
     merge and every test, on SQLite and (with ``--postgres URL``) PostgreSQL.

    .venv/bin/python bench/drift.py
    .venv/bin/python bench/drift.py --records 100000 --postgres postgresql://postgres@127.0.0.1:5432/test

Writes bench/results/drift.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.drift.traffic import mixed  # noqa: E402

from opsgate.domain.config import GatewayConfig  # noqa: E402
from opsgate.drift.checker import DriftChecker  # noqa: E402
from opsgate.drift.collector import DriftCollector  # noqa: E402
from opsgate.drift.features import Observation  # noqa: E402
from opsgate.drift.summary import WindowSummary  # noqa: E402
from opsgate.drift.windows import BucketRow, WindowStore  # noqa: E402
from opsgate.store.record_log import open_store  # noqa: E402

HOUR = 3600
DAYS = 30
console = Console()


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def summarise(records: int, store_url: str, now: float) -> dict[str, Any]:
    """Push ``records`` through a running collector; records/s of the summariser and write() cost."""
    config = GatewayConfig.model_validate({"drift": {"enabled": True, "flush_interval": 5, "queue": 100_000}})
    windows = WindowStore(open_store(store_url))
    collector = DriftCollector(config.drift, windows, replica="bench")
    pool = mixed(random.Random(1), 5000, de=0.1, code=0.2, attack=0.03, refusal=0.03)
    span = DAYS * 86400
    from opsgate.drift.features import detect_language

    detect_language("load the language model before the clock starts")  # ~6 s of model loading
    collector.start()
    write_ns = 0
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("summarising records", total=records)
        for i in range(records):
            record = dict(pool[i % len(pool)])
            record["ts"] = now - span + span * i / records
            while collector.status()["queued"] > 90_000:  # backpressure: measure throughput, not drops
                time.sleep(0.01)
            t0 = time.perf_counter_ns()
            collector.write(record)
            write_ns += time.perf_counter_ns() - t0
            if i % 5000 == 0:
                bar.update(task, completed=collector.counts["summarised"])
        while collector.counts["summarised"] + collector.counts["ignored"] < records:
            bar.update(task, completed=collector.counts["summarised"])
            time.sleep(0.1)
        bar.update(task, completed=records)
    elapsed = time.perf_counter() - started
    collector.stop()
    status = collector.status()
    return {
        "records": records,
        "seconds": round(elapsed, 1),
        "records_per_second": round(records / elapsed),
        "write_us_mean": round(write_ns / records / 1000, 2),
        "dropped": status["dropped"],
        "embedded": status["embedded"],
        "embed_dropped": status["embed_dropped"],
        "embed_skipped": status["embed_skipped"],
        "flushed_rows": status["flushed_rows"],
        "language_sample_rate": config.drift.language_sample_rate,
    }


def full_bucket(rng: np.random.Generator, obs: list[Observation], capacity: int) -> WindowSummary:
    """A bucket summary with counts from ``obs`` and full reservoirs of unit vectors."""
    summary = WindowSummary(capacity=capacity)
    for item in obs:
        summary.add(item)
    for reservoir in (summary.prompt_embeddings, summary.answer_embeddings):
        vectors = rng.normal(size=(capacity, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for key, vector in zip(rng.random(capacity), vectors, strict=True):
            reservoir.add(float(key), vector)
    return summary


def time_check(store_url: str, now: float, repeats: int) -> dict[str, Any]:
    """Write 30 days + 1 day of hourly buckets with full reservoirs, then time checks over them."""
    config = GatewayConfig.model_validate(
        {"drift": {"enabled": True, "bucket": "1h", "current_window": "1d", "reference": {"window": "30d"}}}
    )
    store = open_store(store_url)
    windows = WindowStore(store)
    rng = np.random.default_rng(2)
    obs = [o for o in (mixed_observations()) if o is not None]
    hours = (DAYS + 1) * 24
    alias = f"bench-{uuid.uuid4().hex[:6]}"
    with progress() as bar:
        task = bar.add_task("writing hourly summaries", total=hours)
        end = int(now // HOUR * HOUR)
        for h in range(hours):
            windows.write("bench", [BucketRow(alias, end - h * HOUR, "", full_bucket(rng, obs, 64))])
            bar.advance(task)
    checker = DriftChecker(config, store)
    times = []
    rows = 0
    result: dict[str, Any] = {}
    with progress() as bar:
        task = bar.add_task("checking 30 days", total=repeats)
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = checker.check(alias, now=now, store=False)
            times.append(time.perf_counter() - t0)
            bar.advance(task)
    t0 = time.perf_counter()
    _, rows = windows.read(alias, None, end - DAYS * 86400, end + HOUR, config.drift.test_embeddings)
    read_seconds = time.perf_counter() - t0
    store.close()
    return {
        "buckets": hours,
        "rows_read": rows,
        "check_seconds_median": round(sorted(times)[len(times) // 2], 2),
        "check_seconds_max": round(max(times), 2),
        "read_merge_seconds": round(read_seconds, 2),
        "tests": len(result.get("tests", [])),
        "permutations": max((t.get("permutations", 0) for t in result.get("tests", [])), default=0),
    }


def mixed_observations() -> list[Any]:
    from opsgate.drift.features import observe

    return [observe(r) for r in mixed(random.Random(3), 200, de=0.1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", default=None, help="Also time the check on this PostgreSQL database.")
    args = parser.parse_args()
    now = time.time()
    out: dict[str, Any] = {"command": " ".join(["bench/drift.py", *sys.argv[1:]])}
    with tempfile.TemporaryDirectory() as tmp:
        out["summarise"] = summarise(args.records, f"sqlite:///{tmp}/summarise.db", now)
        console.print(out["summarise"])
        out["check_sqlite"] = time_check(f"sqlite:///{tmp}/check.db", now, args.repeats)
        console.print(out["check_sqlite"])
    if args.postgres:
        schema = f"bench_drift_{uuid.uuid4().hex[:8]}"
        import psycopg

        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            url = f"{args.postgres}?options=-csearch_path%3D{schema}"
            out["check_postgres"] = time_check(url, now, args.repeats)
            console.print(out["check_postgres"])
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "drift.json").write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {results / 'drift.json'}")


if __name__ == "__main__":
    main()
