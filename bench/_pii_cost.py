"""Worker for ``bench/pii.py --cost-only``: p50/p99 of the input-default PII scan, for the ``opsgate`` first on
``PYTHONPATH`` (this tree's or a baseline's), printed as one JSON line.

Each scan reads a new text: the case's text with a run-unique word after every ~500 characters, so no
cache keyed by the text (or by a chunk of it) hides the cost. Caches keyed by a word (the fast
recogniser's token rows, where the tree has them) stay warm, as in a serving process; ``cold`` rows
empty them before every scan (a process that has never seen any of the words). Answers remembered per
phone candidate (``pii_phone.clear_cache``, where the tree has it) are forgotten before every scan, warm
or cold: a new prompt's phone numbers are new.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # tests/ (the data); opsgate comes from PYTHONPATH, first

from tests.guard.datasets import stdlib_paragraphs  # noqa: E402
from tests.guard.pii_scoring import faker_rows  # noqa: E402

from opsgate.domain.guard_config import PiiScannerConfig  # noqa: E402
from opsgate.guard import pii_phone  # noqa: E402
from opsgate.guard.base import ScanContext, Vault  # noqa: E402
from opsgate.guard.pii import PiiScanner  # noqa: E402


def fill(parts: list[str], size: int) -> str:
    """``parts`` joined by spaces, repeated until ``size`` characters, cut there (``bench/pii.py`` uses it too)."""
    out: list[str] = []
    total = 0
    while total < size:
        for part in parts:
            out.append(part)
            total += len(part) + 1
            if total >= size:
                break
    return " ".join(out)[:size]


_COUNTER = itertools.count()


def fresh(text: str) -> str:
    """``text`` with a word never seen before after every 500 characters."""
    return "".join(text[at : at + 500] + f" zq{next(_COUNTER)}x " for at in range(0, len(text), 500))


def percentiles(wall: list[float], cpu: list[float]) -> dict[str, float]:
    """p50/p99 in ms of the wall clock and of this thread's CPU time."""
    wall, cpu = sorted(wall), sorted(cpu)
    at = min(len(wall) - 1, int(len(wall) * 0.99))
    return {
        "p50_ms": round(statistics.median(wall), 3),
        "p99_ms": round(wall[at], 3),
        "cpu_p50_ms": round(statistics.median(cpu), 3),
        "cpu_p99_ms": round(cpu[at], 3),
        "runs": len(wall),
    }


def main() -> None:
    """Measure the four cases and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200, help="scans per 1 KB case (32 KB: a tenth, at least 20)")
    args = parser.parse_args()
    scanner = PiiScanner(PiiScannerConfig(scanner="pii", reversible=True, ner="fast"))
    model = getattr(scanner.detector.names, "model", None)
    row_cache = getattr(model, "_row", None)
    clear_phones = getattr(pii_phone, "clear_cache", lambda: None)  # absent in trees before it
    pii = [str(row["text"]) for row in faker_rows("dev")]
    paragraphs = stdlib_paragraphs()[:400]
    cases = {
        "pii_1kb": fill(pii, 1024),
        "pii_32kb": fill(pii, 32 * 1024),
        "prose_1kb": fill(paragraphs, 1024),
        "prose_32kb": fill(paragraphs, 32 * 1024),
    }
    # The gateway freezes its start-up heap (server/app.py): a full collection then does not walk the model's
    # tables, and the scans here should not either.
    gc.collect()
    gc.freeze()
    out: dict[str, Any] = {}
    for name, text in cases.items():
        runs = args.runs if name.endswith("1kb") else max(20, args.runs // 10)
        for cold in (False, True):
            if cold and row_cache is None:
                continue  # no word cache in this tree: every scan is cold already
            for _ in range(3):
                scanner.scan(fresh(text), ScanContext("input", vault=Vault()))  # warm up
            wall: list[float] = []
            cpu: list[float] = []
            for _ in range(runs):
                sample = fresh(text)
                clear_phones()
                if cold and row_cache is not None:
                    row_cache.cache_clear()
                started, cpu_started = time.perf_counter(), time.thread_time()
                scanner.scan(sample, ScanContext("input", vault=Vault()))
                cpu.append((time.thread_time() - cpu_started) * 1000)
                wall.append((time.perf_counter() - started) * 1000)
            out[name + (" cold" if cold else "")] = percentiles(wall, cpu)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
