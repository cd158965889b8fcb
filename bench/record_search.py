"""Request-log search latency over 1,000,000 stored records, SQLite and PostgreSQL side by side.

Run: .venv/bin/python bench/record_search.py [--records 1000000] [--keep DIR]

Fills each store with synthetic records spread over 30 days (bench/_records.py: planted words at
known frequencies), then times the admin API's query path (``store.search``: full text + a time
filter, newest 50) for words of different selectivity. Target: <= 100 ms for a full-text query
with a time filter. Reports p50/p99 per query kind.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from _common import machine, write_json
from _records import spread_records
from opsgate.store.query import RecordQuery
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore
from record_writer import pg_schema

console = Console()
QUERIES = {
    "refund (1%) last 24h": RecordQuery(text="refund"),
    "chargeback (0.1%) last 24h": RecordQuery(text="chargeback"),
    "zeppelin (0.01%) last 7d": RecordQuery(text="zeppelin"),
    "東京 (0.5%, 2 chars) last 24h": RecordQuery(text="東京"),
    "refund + model last 24h": RecordQuery(text="refund", model="smollm2"),
    "no text: status 5xx last 24h": RecordQuery(status="5xx"),
}


def fill(store: SqlRecordStore, total: int, label: str) -> float:
    rng = random.Random(7)
    chunk = 10_000
    started = time.perf_counter()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"filling {label}", total=total)
        for start in range(0, total, chunk):
            # Records are generated per chunk with timestamps placed along the 30-day span.
            records = spread_records(rng, chunk, days=30)
            span = 30 * 86400
            now = time.time()
            for i, record in enumerate(records):
                record["ts"] = now - span * (1 - (start + i) / total)
            store.write_batch(records)
            progress.update(task, advance=chunk)
    return time.perf_counter() - started


def measure(store: SqlRecordStore, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, template in QUERIES.items():
        days = 7 if "7d" in name else 1
        times, hits = [], 0
        for _ in range(repeats):
            query = RecordQuery(**{**template.__dict__, "since": time.time() - days * 86400, "limit": 50})
            started = time.perf_counter()
            rows, _ = store.search(query)
            times.append((time.perf_counter() - started) * 1000)
            hits = len(rows)
        times.sort()
        out[name] = {
            "p50_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
            "rows_returned": hits,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--stores", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    parser.add_argument("--output", default="record_search.json", help="file name under bench/results/")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine(), "records": args.records, "stores": {}}
    if "sqlite" in args.stores:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = open_store(f"sqlite:///{Path(tmp)}/search.db")
            fill_s = fill(sqlite, args.records, "SQLite")
            results["stores"]["sqlite"] = {
                "fill_s": fill_s,
                "queries": measure(sqlite, args.repeats),
                "db_bytes": Path(f"{tmp}/search.db").stat().st_size,
            }
            sqlite.close()
    if "postgres" in args.stores:
        with pg_schema() as url:
            postgres = open_store(url)
            fill_s = fill(postgres, args.records, "PostgreSQL")
            with postgres.connection() as conn:
                conn.execute("ANALYZE requests")
            results["stores"]["postgres"] = {"fill_s": fill_s, "queries": measure(postgres, args.repeats)}
            postgres.close()
    table = Table("query", *(f"{store} {stat} ms" for store in results["stores"] for stat in ("p50", "p99")), "rows")
    for name in QUERIES:
        cells = []
        rows = ""
        for store in results["stores"].values():
            query = store["queries"][name]
            cells += [f"{query['p50_ms']:.1f}", f"{query['p99_ms']:.1f}"]
            rows = str(query["rows_returned"])
        table.add_row(name, *cells, rows)
    console.print(table)
    console.print(f"wrote {write_json(args.output, results)}")


if __name__ == "__main__":
    main()
