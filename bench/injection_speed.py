"""The injection scanner's cost on new text, this tree's code beside another commit's, in one process.

Both versions run on this tree's model file, lexicon and patterns (``bench/_injection_baseline.py``)
and take turns on every run (which goes first alternates), so load from other work falls on both
alike. Each run's text is new (a word unique to the run after every ~500 characters, as
``bench/_guard_input.py`` makes them), so no verdict cache has read it; the adversarial input is
also measured as the same text every run. Per input and version: the whole scanner (``scan``:
rules and learned model) p50/p99 wall time and CPU time of the thread, and the model alone
(``InjectionModel.score`` of the text) and the rules alone (``variants`` + ``injection_score``)
at p50 in CPU time (on a loaded machine wall time is mostly waiting for a core). The parts run after
the scan, on the text and a space: the scan has already cached the new words' feature keys. Like the
gateway after start-up, the process calls ``gc.freeze()`` once the scanners are loaded. Prints a
Markdown table and writes ``bench/results/injection_speed.json``.

    nice -n 10 .venv/bin/python bench/injection_speed.py --baseline-ref 9e1d0b4 [--runs 100]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _guard_input import ADVERSARIAL_LINES, REQUEST, _letters, dense_pii, fresh, stdlib_text  # noqa: E402
from _injection_baseline import load  # noqa: E402
from opsgate.domain.guard_config import InjectionScannerConfig  # noqa: E402
from opsgate.guard import injection  # noqa: E402
from opsgate.guard.base import ScanContext  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "injection_speed.json"


def inputs() -> dict[str, Callable[[int], str]]:
    """The texts measured, by label: each a function of the run's number."""
    one_kb = (REQUEST * 6)[:1024]
    docstrings = stdlib_text(32_000)
    pii = dense_pii(32_000)
    adversarial = "".join(line * 450 for line in ADVERSARIAL_LINES)[:32_000]
    return {
        "1 KB support request, new each run": lambda run: fresh(f"Ticket {_letters(run)}. {one_kb}", run)[:1024],
        "25 KB stdlib docstrings, new each run": lambda run: fresh(docstrings[:25_000], run),
        "32 KB stdlib docstrings, new each run": lambda run: fresh(docstrings, run),
        "32 KB dense PII, new each run": lambda run: fresh(pii, run),
        "32 KB adversarial near-misses, new each run": lambda run: fresh(adversarial, run),
        "32 KB adversarial near-misses, same text": lambda run: adversarial,
    }


def _quantile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6, 3)


def measure(baseline_ref: str, runs: int) -> dict[str, Any]:
    """p50/p99 per input, for this tree and the baseline."""
    old_injection, _ = load(baseline_ref)
    config = InjectionScannerConfig(scanner="prompt_injection")
    versions: dict[str, Any] = {"this tree": injection, f"baseline {baseline_ref}": old_injection}
    scanners = {name: module.InjectionScanner(config) for name, module in versions.items()}
    context = ScanContext("input", role="user")
    for scanner in scanners.values():
        scanner.scan(inputs()["32 KB stdlib docstrings, new each run"](10**6), context)  # lazy imports
    # As the gateway does after start-up (server/app.py): what is loaded by now is never traversed by
    # the collector again, so a full collection costs what the requests since allocated, not the heap.
    gc.collect()
    gc.freeze()
    out: dict[str, Any] = {"baseline": baseline_ref, "runs": runs, "gc_frozen": True, "inputs": {}}
    for label, make in inputs().items():
        count = runs * 3 if len(make(0)) < 8192 else runs
        wall: dict[str, list[int]] = {name: [] for name in versions}
        cpu: dict[str, list[int]] = {name: [] for name in versions}
        model: dict[str, list[int]] = {name: [] for name in versions}
        rules: dict[str, list[int]] = {name: [] for name in versions}
        load_before = os.getloadavg()[0]
        gc.collect()
        for run in range(count + 20):
            text = make(run)
            order = list(versions) if run % 2 else list(reversed(versions))
            for name in order:
                module, scanner = versions[name], scanners[name]
                started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
                scanner.scan(text, context)
                elapsed, elapsed_cpu = time.perf_counter_ns() - started, time.thread_time_ns() - started_cpu
                # The parts on a text one character longer: new to both (the scan cached its verdict).
                part = text + " "
                started = time.thread_time_ns()
                scanner.model.score(part)
                model_ns = time.thread_time_ns() - started
                started = time.thread_time_ns()
                module.injection_score(part, module.variants(part))
                rules_ns = time.thread_time_ns() - started
                if run >= 20:  # the first runs warm caches and lazy imports
                    wall[name].append(elapsed)
                    cpu[name].append(elapsed_cpu)
                    model[name].append(model_ns)
                    rules[name].append(rules_ns)
        out["inputs"][label] = {
            "chars": len(make(0)),
            "runs": count,
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            **{
                name: {
                    "p50_ms": _quantile(wall[name], 0.5),
                    "p99_ms": _quantile(wall[name], 0.99),
                    "cpu_p50_ms": _quantile(cpu[name], 0.5),
                    "cpu_p99_ms": _quantile(cpu[name], 0.99),
                    "model_cpu_p50_ms": _quantile(model[name], 0.5),
                    "rules_cpu_p50_ms": _quantile(rules[name], 0.5),
                }
                for name in versions
            },
        }
        print(label, json.dumps(out["inputs"][label]), file=sys.stderr, flush=True)
    return out


def table(result: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    names = ["this tree", f"baseline {result['baseline']}"]
    lines = [
        "| input | load 1m | scanner wall p50 / p99 ms | scanner CPU p50 / p99 ms | model CPU p50 | rules CPU p50 |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in result["inputs"].items():
        cells = [
            " vs ".join(f"{row[n]['p50_ms']:.2f} / {row[n]['p99_ms']:.2f}" for n in names),
            " vs ".join(f"{row[n]['cpu_p50_ms']:.2f} / {row[n]['cpu_p99_ms']:.2f}" for n in names),
            " vs ".join(f"{row[n]['model_cpu_p50_ms']:.2f}" for n in names),
            " vs ".join(f"{row[n]['rules_cpu_p50_ms']:.2f}" for n in names),
        ]
        loads = "-".join(f"{x:.1f}" for x in row["load_average_1m"])
        lines.append(f"| {label} | {loads} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-ref", default="HEAD~1", help="the commit whose scanner code is the baseline")
    parser.add_argument("--runs", type=int, default=100, help="runs per 32 KB input (1 KB: three times as many)")
    args = parser.parse_args()
    result = measure(args.baseline_ref, args.runs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("this tree vs baseline " + args.baseline_ref + ":\n" + table(result))


if __name__ == "__main__":
    main()
