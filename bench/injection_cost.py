"""The injection scanner's CPU cost on new text, this tree beside a copy of another commit's, interleaved.

Like ``bench/injection_speed.py`` (same baseline loading, ``bench/_injection_baseline.py``: this tree's
model file, lexicon and patterns on both sides), but CPU only, whole scans only, and with the inputs of
issue 12's goal: 1 KB, 25 KB of stdlib docstrings, 25 KB of prose (docstring paragraphs joined by
spaces into one line, as ``bench/pii.py``'s prose case: a long line takes other paths in the rules)
and 32 KB of docstrings. Each run's text is new (``fresh``); the two versions alternate which goes
first; ``gc.freeze()`` after loading, as the gateway does. Per round and input: thread CPU p50/p99 ms
of each version and the ratio of p50s. The baseline looks its pairs up with its own ``injection_pairs``
(``use_baseline_pairs``).

    nice -n 10 .venv/bin/python bench/injection_cost.py --baseline-ref HEAD [--runs 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tests.guard.datasets import stdlib_paragraphs  # noqa: E402

from _guard_input import REQUEST, _letters, fresh, stdlib_text  # noqa: E402
from _injection_baseline import load  # noqa: E402
from _pii_cost import fill  # noqa: E402
from opsgate.domain.guard_config import InjectionScannerConfig  # noqa: E402
from opsgate.guard import injection  # noqa: E402
from opsgate.guard.base import ScanContext  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "injection_cost.json"


def inputs() -> dict[str, Callable[[int], str]]:
    """The texts measured, by label: each a function of the run's number (new text every run)."""
    one_kb = (REQUEST * 6)[:1024]
    docstrings = stdlib_text(32_000)
    prose = fill(stdlib_paragraphs()[:400], 25_000)
    return {
        "1 KB support request": lambda run: fresh(f"Ticket {_letters(run)}. {one_kb}", run)[:1024],
        "25 KB docstrings": lambda run: fresh(docstrings[:25_000], run),
        "25 KB prose (one line)": lambda run: fresh(prose, run),
        "32 KB docstrings": lambda run: fresh(docstrings, run),
    }


def use_baseline_pairs(ref: str, model: Any) -> bool:
    """Give the baseline's model the baseline's ``PairTable``: ``_injection_baseline`` copies the scanner's
    modules but not ``injection_pairs``, so both sides would look pairs up with this tree's table.

    The table is rebuilt from the same (code, value) entries with ``ref``'s class. False where ``ref`` has
    no ``injection_pairs`` or its model no table.
    """
    pairs = getattr(model, "_pairs", None)
    found = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:src/opsgate/guard/injection_pairs.py"], capture_output=True, text=True
    )
    if pairs is None or found.returncode != 0:
        return False
    module = types.ModuleType(f"injection_pairs_at_{ref}")
    exec(compile(found.stdout, f"{ref}:injection_pairs.py", "exec"), module.__dict__)
    windows = pairs._windows  # row h: slots h, h+1, ...: column 0 and the last row's tail are every slot
    slots = np.concatenate((windows[:, 0], windows[-1, 1:]))
    used = slots != -1
    model._pairs = module.PairTable(slots[used].astype(np.int64), pairs._values[used].astype(np.int64))
    return True


def _ms(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6, 3)


def measure(baseline_ref: str, runs: int, rounds: int) -> dict[str, Any]:
    """CPU p50/p99 per round, input and version."""
    old_injection, _ = load(baseline_ref)
    config = InjectionScannerConfig(scanner="prompt_injection")
    scanners = {"new": injection.InjectionScanner(config), "old": old_injection.InjectionScanner(config)}
    own_pairs = use_baseline_pairs(baseline_ref, scanners["old"].model)
    print(f"baseline's own PairTable: {own_pairs}", file=sys.stderr)
    context = ScanContext("input", role="user")
    made = inputs()
    for scanner in scanners.values():
        for make in made.values():
            for run in range(10):
                scanner.scan(make(10**6 + run), context)  # lazy imports, caches of the words every text has
    gc.collect()
    gc.freeze()
    out: dict[str, Any] = {"baseline": baseline_ref, "runs": runs, "rounds": []}
    for index in range(rounds):
        this_round: dict[str, Any] = {}
        for label, make in made.items():
            count = runs * 3 if len(make(0)) < 8192 else runs
            cpu: dict[str, list[int]] = {name: [] for name in scanners}
            load_before = os.getloadavg()[0]
            for run in range(count):
                text = make(index * 100_000 + run)
                for name in list(scanners) if run % 2 else list(reversed(scanners)):
                    started = time.thread_time_ns()
                    scanners[name].scan(text, context)
                    cpu[name].append(time.thread_time_ns() - started)
            row: dict[str, Any] = {name: {"p50": _ms(cpu[name], 0.5), "p99": _ms(cpu[name], 0.99)} for name in scanners}
            row["ratio_p50"] = round(row["new"]["p50"] / row["old"]["p50"], 3)
            row["load_1m"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
            this_round[label] = row
            print(f"round {index + 1} {label}: {json.dumps(row)}", file=sys.stderr, flush=True)
        out["rounds"].append(this_round)
    return out


def table(result: dict[str, Any]) -> str:
    """A Markdown table: one row per input and round."""
    lines = [
        f"| input | round | load 1m | new CPU p50 / p99 ms | {result['baseline']} CPU p50 / p99 ms | new / old p50 |",
        "|---|---|---|---|---|---|",
    ]
    for index, this_round in enumerate(result["rounds"]):
        for label, row in this_round.items():
            new, old, loads = row["new"], row["old"], row["load_1m"]
            lines.append(
                f"| {label} | {index + 1} | {loads[0]}-{loads[1]} | {new['p50']:.2f} / {new['p99']:.2f}"
                f" | {old['p50']:.2f} / {old['p99']:.2f} | {row['ratio_p50']:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-ref", default="HEAD", help="the commit whose scanner code is the baseline")
    parser.add_argument("--runs", type=int, default=200, help="runs per 25-32 KB input and round (1 KB: 3x)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = measure(args.baseline_ref, args.runs, args.rounds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
