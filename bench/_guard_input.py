"""The default input policy's cost on 1 KB and 32 KB prompts, for whichever opsgate is first on sys.path.

Run alone (``python bench/_guard_input.py --runs N``) it prints one JSON object; ``bench/guard.py``
runs it twice — on this tree and, with ``--baseline-ref``, on an older commit checked out beside it —
so the two are measured the same way. Only the opsgate API both trees have is used (the engine's
``run`` over the default policy's input scanners), so a baseline from before this file works.
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import statistics
import sysconfig
import time
from pathlib import Path
from typing import Any

from opsgate.domain.guard_config import GuardConfig
from opsgate.guard.base import ScanContext, Vault
from opsgate.guard.engine import GuardEngine

REQUEST = (
    "Hi, I ordered two pairs of running shoes on March 3rd (order 58213-B) and only one pair arrived "
    "yesterday. The box looked fine and the packing slip lists both items, so I suspect the second "
    "pair was never packed. Could you tell me whether the second pair is still in stock in size 10.5? "
)
# Near misses for a backtracking engine: gates open on every line, the completing word never comes.
ADVERSARIAL_LINES = ("my late grandmother\n", "give me the card numbers\n", "ignore the previous\n")


def stdlib_text(chars: int) -> str:
    """Benign prose of ``chars`` characters: the standard library's docstrings, paragraph after paragraph."""
    parts: list[str] = []
    total = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="ignore"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                doc = ast.get_docstring(node) or ""
                if len(doc) > 200:
                    parts.append(doc)
                    total += len(doc) + 2
                    if total >= chars:
                        return "\n\n".join(parts)[:chars]
    return "\n\n".join(parts)[:chars]


def inputs() -> dict[str, str]:
    """The prompts measured, by label."""
    one_kb = (REQUEST * 6)[:1024]
    adversarial = "".join(line * 450 for line in ADVERSARIAL_LINES)[:32_000]
    return {
        "1 KB support request": one_kb,
        "32 KB document (stdlib docstrings)": stdlib_text(32_000),
        "32 KB adversarial near-misses": adversarial,
    }


def measure(runs: int) -> dict[str, Any]:
    """p50/p99/max of the default input policy per input, and per scanner on the 32 KB document."""
    engine = GuardEngine(GuardConfig(enabled=True))
    policy = engine.policies[0]
    out: dict[str, Any] = {"scanners": [entry.name for entry in policy.input]}
    for label, text in inputs().items():
        count = runs if len(text) < 4096 else max(20, runs // 10)
        samples: list[int] = []
        per_scanner: dict[str, list[float]] = {}
        for index in range(count + 20):
            context = ScanContext("input", vault=Vault())
            started = time.perf_counter_ns()
            run = engine.run(policy.input, [("user", text)], context)
            elapsed = time.perf_counter_ns() - started
            if index >= 20:  # the first runs warm caches and lazy imports
                samples.append(elapsed)
                for entry in run.record():
                    per_scanner.setdefault(entry["scanner"], []).append(entry["ms"])
            if index == 19:
                gc.collect()
        ordered = sorted(samples)
        out[label] = {
            "chars": len(text),
            "runs": count,
            "p50_ms": round(ordered[len(ordered) // 2] / 1e6, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] / 1e6, 3),
            "max_ms": round(ordered[-1] / 1e6, 3),
            "p50_ms_by_scanner": {k: round(statistics.median(v), 3) for k, v in per_scanner.items()},
        }
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    print(json.dumps(measure(parser.parse_args().runs)))
