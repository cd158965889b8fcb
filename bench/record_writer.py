"""Request-log writer throughput: records/s from journal append to committed rows, SQLite and PostgreSQL.

Run: .venv/bin/python bench/record_writer.py [--records 50000] [--live] [--output NAME.json]

Measures the real path the gateway uses: ``RecordLog.write`` (seal, journal ``os.write``) on the
calling thread while the writer thread batches into the store; the clock stops when every record
is committed. Also times ``store.write_batch`` alone. PostgreSQL: 127.0.0.1:5432, database ``test``,
a scratch schema dropped afterwards. Target: >= 5,000 records/s sustained.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from _common import machine, postgres_schema, write_json
from _records import spread_records
from opsgate.domain.config import RecordConfig
from opsgate.store.record_log import RecordLog, open_store

PG = "postgresql://postgres@127.0.0.1:5432/test"
console = Console()


def pg_schema() -> AbstractContextManager[str]:
    """A scratch schema in the local PostgreSQL ``test`` database."""
    return postgres_schema(PG)


def through_journal(url: str, records: list[dict[str, Any]], directory: Path) -> dict[str, float]:
    log = RecordLog(RecordConfig(store=url, journal_dir=str(directory / "journal"), batch_size=1000))
    log.start()
    assert log.writer is not None
    time.sleep(0.5)  # let the writer open the store and migrate, outside the clock
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("journal", total=len(records))
        for n, record in enumerate(records):
            log.write(dict(record))
            if n % 5000 == 0:
                progress.update(task, completed=n)
    appended = time.perf_counter() - started
    assert log.writer.flush(timeout=600), "writer did not catch up"
    total = time.perf_counter() - started
    written = log.writer.written
    log.stop()
    return {
        "records": written,
        "append_s": appended,
        "total_s": total,
        "records_per_s": written / total,
        "append_us_per_record": appended / len(records) * 1e6,
    }


def direct(url: str, records: list[dict[str, Any]], batch: int = 1000) -> dict[str, float]:
    store = open_store(url)
    rows = [{**r, "id": uuid.uuid4().hex} for r in records]
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        store.write_batch(rows[start : start + batch])
    elapsed = time.perf_counter() - started
    store.close()
    return {"records": len(rows), "total_s": elapsed, "records_per_s": len(rows) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument(
        "--live",
        action="store_true",
        help="time-ordered records at 5,000/s ending now, as a gateway at that rate journals them "
        "(default: spread over the last day, the worst case for the SLO rollups: ~1 record per rollup group)",
    )
    parser.add_argument("--output", default="record_writer.json", help="file name under bench/results/")
    args = parser.parse_args()
    days = args.records / 5000 / 86400 if args.live else 1
    records = spread_records(random.Random(1), args.records, days=days)
    results: dict[str, Any] = {
        "machine": machine(),
        "records": args.records,
        "timestamps": "live (5,000/s)" if args.live else "spread over 1 day",
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results["runs"]["sqlite_journal"] = through_journal(f"sqlite:///{root}/a.db", records, root / "a")
        results["runs"]["sqlite_direct"] = direct(f"sqlite:///{root}/b.db", records)
        with pg_schema() as url:
            results["runs"]["postgres_journal"] = through_journal(url, records, root / "c")
        with pg_schema() as url:
            results["runs"]["postgres_direct"] = direct(url, records)
    table = Table("path", "records", "seconds", "records/s", "journal append µs/record")
    for name, run in results["runs"].items():
        table.add_row(
            name,
            str(run["records"]),
            f"{run['total_s']:.2f}",
            f"{run['records_per_s']:,.0f}",
            f"{run.get('append_us_per_record', float('nan')):.1f}",
        )
    console.print(table)
    console.print(f"wrote {write_json(args.output, results)}")


if __name__ == "__main__":
    main()
