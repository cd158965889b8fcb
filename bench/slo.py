"""SLO status over 30 days of records: fill ≥ 1M rows, then time the SLO engine (SQLite and PostgreSQL).

Run: .venv/bin/python bench/slo.py [--rows 1000000] [--repeat 5] [--skip-postgres]

Rows are generated inside the database with one set-based INSERT … SELECT (a recursive CTE on
SQLite, generate_series on PostgreSQL), spread evenly over 30 days across 20 tenants and 4 models,
2% of them failing; the SLO rollups are then filled from them with the same statements the
migration's backfill uses. Timed (median of ``--repeat`` runs, cold first run reported apart):
``status`` for the example config's objectives (operator scope and one tenant), a 7-day history,
a 24-hour dashboard time series and the 24-hour error groups. Target: status ≤ 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from _common import machine, postgres_schema, write_json
from opsgate.domain.config import parse_config
from opsgate.errors_trail import error_groups
from opsgate.slo.engine import SloEngine
from opsgate.store import rollups
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore

PG = "postgresql://postgres@127.0.0.1:5432/test"
EXAMPLE = Path(__file__).resolve().parent.parent / "src" / "opsgate" / "defaults" / "slo-example.yaml"
DAYS = 30
console = Console()

_COLUMNS = (
    "id, ts, tenant, endpoint, model, deployment, status, error_type, error_message, latency_ms, ttft_ms, "
    "prompt_tokens, completion_tokens, cost"
)


def _generate_sql(dialect: str, rows: int, now: float) -> str:
    span = DAYS * 86400
    if dialect == "postgres":
        rnd = "floor(random() * {n})::int"
        source = f"generate_series(0, {rows - 1}) AS g(i)"
    else:
        rnd = "(abs(random()) % {n})"
        source = (
            f"(WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < {rows - 1}) SELECT i FROM g)"
        )
    r = rnd.format
    status = f"(CASE WHEN {r(n=100)} < 2 THEN 502 WHEN {r(n=100)} < 1 THEN 400 ELSE 200 END)"
    return (
        f"INSERT INTO requests ({_COLUMNS}) SELECT 'b' || i, {now - span} + i * {span / rows}, "
        f"'t' || {r(n=20)}, 'chat', 'model-' || (i % 4), 'model-' || (i % 4) || '#0', st, "
        "CASE WHEN st >= 500 THEN 'upstream_error' END, "
        "CASE WHEN st >= 500 THEN 'upstream returned 500 after ' || (i % 997) || ' ms' END, "
        f"50 + {r(n=4000)}, CASE WHEN i % 2 = 0 THEN 20 + {r(n=900)} END, 20 + {r(n=400)}, 1 + {r(n=300)}, 0.001 "
        f"FROM (SELECT i, {status} AS st FROM {source}) AS s"
    )


def fill(store: SqlRecordStore, rows: int) -> dict[str, float]:
    """Generate ``rows`` records over 30 days and roll them up, set-based; seconds per step."""
    now = time.time()
    bucket = rollups.POSTGRES_BUCKET if store.dialect == "postgres" else rollups.SQLITE_BUCKET
    recent = f"(SELECT * FROM requests WHERE ts >= {now - 8 * 86400}) AS recent"
    steps = {
        "insert_rows": _generate_sql(store.dialect, rows, now),
        "rollup_hourly": rollups.rollup_upsert(rollups.HOUR_TABLE, rollups.HOUR_SECONDS, "requests", bucket),
        "rollup_10s": rollups.rollup_upsert(rollups.FINE_TABLE, rollups.FINE_SECONDS, recent, bucket),
    }
    timings = {}
    for name, statement in steps.items():
        started = time.perf_counter()
        with store.connection() as conn, store.transaction(conn):
            conn.execute(statement)  # no parameters: psycopg must not read "%" as a placeholder
        timings[name] = time.perf_counter() - started
        console.print(f"  {name}: {timings[name]:.1f} s")
    with store.connection() as conn:
        conn.execute("ANALYZE")
        counts = {
            table: store.execute(conn, f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("requests", rollups.HOUR_TABLE, rollups.FINE_TABLE)
        }
    console.print(f"  rows: {counts}")
    return {**timings, **{f"rows_{k}": float(v) for k, v in counts.items()}}


def timed(action: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Cold first call, then the median and max of ``repeat`` more, in milliseconds."""
    started = time.perf_counter()
    action()
    cold = (time.perf_counter() - started) * 1000
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        runs.append((time.perf_counter() - started) * 1000)
    return {"cold_ms": cold, "median_ms": statistics.median(runs), "max_ms": max(runs)}


def measure(url: str, rows: int, repeat: int) -> dict[str, Any]:
    config = parse_config(yaml.safe_load(EXAMPLE.read_text()))
    store = open_store(url)
    try:
        console.print(f"[bold]{store.dialect}[/bold]: filling {rows:,} rows over {DAYS} days")
        result: dict[str, Any] = {"fill_s": fill(store, rows)}
        engine = SloEngine(store, config.slo, config.alerts)
        now = time.time()
        statuses = engine.status()
        result["objectives"] = {s["name"]: {"current": s["current"], "state": s["state"]} for s in statuses}
        result["timings"] = {
            "status_operator": timed(lambda: engine.status(), repeat),
            "status_one_tenant": timed(lambda: engine.status("t3"), repeat),
            "history_7d": timed(lambda: engine.history("availability", now - 7 * 86400), repeat),
            "timeseries_24h_5m": timed(lambda: engine.timeseries(now - 86400, 300), repeat),
            "error_groups_24h": timed(lambda: error_groups(store, now - 86400), repeat),
        }
    finally:
        store.close()
    for query, t in result["timings"].items():
        console.print(f"  {query}: cold {t['cold_ms']:.1f} ms, median {t['median_ms']:.1f} ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine(), "rows": args.rows, "days": DAYS, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        results["runs"]["sqlite"] = measure(f"sqlite:///{tmp}/slo.db", args.rows, args.repeat)
    if not args.skip_postgres:
        with postgres_schema(PG) as url:
            results["runs"]["postgres"] = measure(url, args.rows, args.repeat)
    table = Table("store", "query", "cold ms", "median ms", "max ms")
    for store_name, run in results["runs"].items():
        for query, t in run["timings"].items():
            table.add_row(store_name, query, f"{t['cold_ms']:.1f}", f"{t['median_ms']:.1f}", f"{t['max_ms']:.1f}")
    console.print(table)
    console.print(f"wrote {write_json('slo.json', results)}")


if __name__ == "__main__":
    main()
