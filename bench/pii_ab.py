"""CPU time of the input-default PII scan, an earlier tree beside this one, in one process, turn by turn.

    git archive HEAD src | tar -x -C /tmp/base   # the tree to compare with
    nice -n 10 .venv/bin/python bench/pii_ab.py --base /tmp/base/src --runs 200

Both trees' ``opsgate`` are imported into this process (the earlier one first, its modules then set aside
under their objects, so each keeps its own), and every sample scans the same new text with both, in
alternating order: on a shared, loaded machine the two see the same load. Time is this thread's CPU time
(``time.thread_time``). Each text is new (a word never seen before after every ~500 characters, as
``bench/_guard_input.py`` writes it); the phone answers remembered per candidate are forgotten before every
scan (a new prompt's numbers are new), the name recogniser's per-token rows stay warm (a serving process).

Cases: the 1 KB support request and 1 KB of Faker PII sentences; 32 KB of prose (the standard library's
docstring paragraphs, as ``bench/_pii_cost.py``), the 32 KB stdlib docstrings and the 32 KB dense PII of
``bench/guard.py``. Prints p50/p99 per tree and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _tree(src: Path) -> dict[str, ModuleType]:
    """The PII modules of the ``opsgate`` under ``src``, imported fresh; ``sys.modules`` left without them."""
    sys.path.insert(0, str(src))
    try:
        modules = {
            name: importlib.import_module(f"opsgate.{name}")
            for name in ("domain.guard_config", "guard.base", "guard.pii", "guard.pii_phone")
        }
        assert str(Path(modules["guard.pii"].__file__ or "").resolve()).startswith(str(src.resolve()))
    finally:
        sys.path.remove(str(src))
        for name in [name for name in sys.modules if name == "opsgate" or name.startswith("opsgate.")]:
            del sys.modules[name]
    return modules


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
    }


def main() -> None:
    """Measure the cases with both trees and print one JSON object."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, required=True, help="src/ of the tree to compare with")
    parser.add_argument("--new", type=Path, default=ROOT / "src")
    parser.add_argument("--runs", type=int, default=200, help="samples per 1 KB case (32 KB: a fifth, at least 30)")
    args = parser.parse_args()
    trees = {"base": _tree(args.base), "new": _tree(args.new)}
    sys.path[:0] = [str(args.new), str(ROOT), str(ROOT / "bench")]
    from tests.guard.datasets import stdlib_paragraphs
    from tests.guard.pii_scoring import faker_rows

    from _guard_input import REQUEST, dense_pii, fresh, stdlib_text
    from _pii_cost import fill

    cases = {
        "1 KB support request": (REQUEST * 6)[:1024],
        "1 KB Faker PII": fill([str(row["text"]) for row in faker_rows("dev")], 1024),
        "32 KB prose (docstring paragraphs)": fill(stdlib_paragraphs()[:400], 32 * 1024),
        "32 KB stdlib docstrings": stdlib_text(32_000),
        "32 KB dense PII": dense_pii(32_000),
    }
    scanners = {}
    for label, tree in trees.items():
        config = tree["domain.guard_config"].PiiScannerConfig(scanner="pii", reversible=True, ner="fast")
        scanners[label] = tree["guard.pii"].PiiScanner(config)

    def scan(label: str, text: str) -> float:
        tree = trees[label]
        tree["guard.pii_phone"].clear_cache()
        context = tree["guard.base"].ScanContext("input", vault=tree["guard.base"].Vault())
        started = time.thread_time()
        scanners[label].scan(text, context)
        return (time.thread_time() - started) * 1000

    gc.collect()
    gc.freeze()  # as the gateway does after start-up (server/app.py)
    out: dict[str, Any] = {}
    run = 0
    for name, text in cases.items():
        count = args.runs if len(text) < 8192 else max(30, args.runs // 5)
        samples: dict[str, list[float]] = {"base": [], "new": []}
        for index in range(count + 5):
            run += 1
            sample = fresh(text, run)
            order = ("base", "new") if index % 2 else ("new", "base")
            times = {label: scan(label, sample) for label in order}
            if index >= 5:  # warm-up
                for label in order:
                    samples[label].append(times[label])
        result = {label: _percentiles(values) for label, values in samples.items()}
        result["new/base p50"] = round(result["new"]["p50_ms"] / result["base"]["p50_ms"], 3)
        out[name] = result
        print(name, json.dumps(result), file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
