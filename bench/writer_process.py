"""Writer process vs writer thread, side by side in one run: does ``record.writer: process`` gain anything?

Run: .venv/bin/python bench/writer_process.py [--rounds 3] [--seconds 8] [--rate 1500] [--output NAME.json]

The process writer's reason to exist is the gateway's event loop: a writer thread parses lines and
runs SQL in the gateway's interpreter and so competes for the GIL, which shows as loop lag (a
request's p99). This measures exactly that, on the real ``RecordLog`` (SQLite): an asyncio loop
writes records at ``--rate`` per second (as the record stage does) while a 1 ms ticker measures how
late each tick wakes up; then the clock runs until every record is stored. Each round runs the
three variants in turn (no record log, thread, process) so the machine's load hits them alike; the
table reports each variant's median over rounds of: tick-lag p50/p99/max, and seconds from the last
write until everything is stored. The variants' spread over rounds says how much noise there is.

Measured 2026-12-06 on the shared 2-core dev machine (3 rounds, 6 s, 1,500 records/s, SQLite):
``bench/results/writer-process.json`` (load average ~12) and ``writer-process-run2.json`` (~3-6).
Under load the writer thread stalled the loop (tick lag p50 14 / 22 / 1.8 ms vs 1.4 / 4.1 / 4.8 for
the process, p99 2.4 s / 0.9 s / 65 ms vs 44 / 750 / 79 ms; two of three thread rounds could not keep
the 1,500/s rate) and took 8.5-18 s to drain against 0.6-1.3 s. With lighter load p50/p99 lag is
the same within noise (p99 9.0 vs 10.1 ms), the thread's worst tick 545 vs 29 ms, drain 2.1 vs
0.14 s. So the process writer shows a gain (tail stalls and catch-up) when cores are busy: kept,
opt-in. Not measured here: PostgreSQL, and a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from _common import machine, write_json
from _records import make_record
from opsgate.domain.config import RecordConfig
from opsgate.store.record_log import RecordLog

console = Console()
VARIANTS = ("none", "thread", "process")


async def _drive(log: RecordLog | None, seconds: float, rate: float, seed: int) -> tuple[list[float], int]:
    """Write ``rate`` records/s for ``seconds`` while a 1 ms ticker records how late it wakes (ms)."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    stop = loop.time() + seconds
    written = 0

    async def ticker() -> None:
        while loop.time() < stop:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            lags.append((loop.time() - due) * 1000.0)

    async def writer() -> None:
        nonlocal written
        started = loop.time()
        while loop.time() < stop:
            target = int((loop.time() - started) * rate)
            while written < target:
                record = make_record(rng, time.time())
                record["id"] = f"r{seed}-{written}"
                if log is not None:
                    log.write(record)
                written += 1
            await asyncio.sleep(0.002)

    await asyncio.gather(ticker(), writer())
    return lags, written


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one(variant: str, seconds: float, rate: float, seed: int) -> dict[str, float]:
    """One variant's run in a fresh journal and SQLite file."""
    with tempfile.TemporaryDirectory(prefix="opsgate-bench-writer-") as directory:
        log: RecordLog | None = None
        if variant != "none":
            config = RecordConfig(
                store=f"sqlite:///{directory}/requests.db", journal_dir=f"{directory}/journal", writer=variant
            )
            log = RecordLog(config)
            log.start()
            assert log.writer is not None and log.writer.flush(timeout=120), "writer did not start"
        lags, written = asyncio.run(_drive(log, seconds, rate, seed))
        drained = 0.0
        if log is not None:
            assert log.writer is not None
            started = time.perf_counter()
            assert log.writer.flush(timeout=600), f"{variant}: the writer did not catch up"
            drained = time.perf_counter() - started
            log.stop()
        return {
            "written": float(written),
            "lag_p50_ms": _percentile(lags, 0.50),
            "lag_p99_ms": _percentile(lags, 0.99),
            "lag_max_ms": max(lags),
            "drain_s": drained,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=1500.0, help="records written per second")
    parser.add_argument("--output", default="writer-process.json")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("rounds", total=args.rounds * len(VARIANTS))
        for round_ in range(args.rounds):
            # Rotate the order each round, so no variant always runs first (or after the same one).
            order = VARIANTS[round_ % 3 :] + VARIANTS[: round_ % 3]
            for variant in order:
                runs[variant].append(one(variant, args.seconds, args.rate, seed=round_))
                progress.advance(task)
    table = Table(
        "writer", "lag p50 ms", "lag p99 ms", "lag max ms", "drain s", "p99 per round", title="median of rounds"
    )
    summary: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        rows = runs[variant]
        summary[variant] = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        table.add_row(
            variant,
            f"{summary[variant]['lag_p50_ms']:.3f}",
            f"{summary[variant]['lag_p99_ms']:.2f}",
            f"{summary[variant]['lag_max_ms']:.1f}",
            f"{summary[variant]['drain_s']:.2f}",
            " ".join(f"{row['lag_p99_ms']:.2f}" for row in rows),
        )
    console.print(table)
    path = write_json(
        args.output,
        {"machine": machine(), "settings": vars(args), "runs": runs, "median": summary},
    )
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
