"""The default input policy's cost on 1 KB and 32 KB prompts, for whichever opsgate is first on sys.path.

Run alone (``python bench/_guard_input.py --runs N``) it prints one JSON object; ``bench/guard.py``
runs it twice — on this tree and, with ``--baseline-ref``, on an older commit checked out beside it —
so the two are measured the same way. Only the opsgate API both trees have is used (the engine's
``run`` over the default policy's input scanners), so a baseline from before this file works.

Each input is measured twice where it matters: the same text every run (what a chat's re-sent
history costs, every cache of text read before warm) and a text new every run (a token unique to
the run after every ~500 characters, so no cache — the injection scanner's, the PII model's — has
read it).
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable
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


HISTORY = [
    ("system", "You are the support assistant of ACME Corp. Answer briefly and politely."),
    ("user", (REQUEST * 3)[:600]),
    ("assistant", "I checked order 58213-B: the warehouse scanned only one box. Size 10.5 is in stock. " * 5),
    ("user", "Thanks. The tracking page still says 'in transit' for the whole order; is that expected? " * 4),
    ("assistant", "Yes, it updates once the replacement leaves the warehouse, usually within 24 hours. " * 5),
]


def dense_pii(chars: int) -> str:
    """Faker sentences full of names, addresses and numbers (``tests/data/guard/pii_faker_dev.jsonl``)."""
    path = Path(__file__).resolve().parent.parent / "tests" / "data" / "guard" / "pii_faker_dev.jsonl"
    return " ".join(json.loads(line)["text"] for line in path.read_text().splitlines())[:chars]


def _letters(number: int) -> str:
    """``number`` written in letters (a token with digits in it would look like leetspeak to the scanner)."""
    out = ""
    while True:
        number, digit = divmod(number, 26)
        out += "abcdefghijklmnopqrstuvwxyz"[digit]
        if not number:
            return out


def fresh(text: str, run: int) -> str:
    """``text`` with a word unique to ``run`` after every ~500 characters: no cache has read it before."""
    out: list[str] = []
    last = 0
    for cut in range(0, len(text), 500):
        space = text.find(" ", cut)
        if space < last:
            continue
        out += [text[last:space], f" zq{_letters(run)}q{_letters(cut // 500)}"]
        last = space
    return ("".join(out) + text[last:])[: len(text)]


Messages = list[tuple[str, str]]


def inputs() -> dict[str, Callable[[int], Messages]]:
    """The prompts measured, by label: each a function of the run's number (``fresh`` ones differ every run)."""
    one_kb = (REQUEST * 6)[:1024]
    adversarial = "".join(line * 450 for line in ADVERSARIAL_LINES)[:32_000]
    docstrings = stdlib_text(32_000)
    pii = dense_pii(32_000)
    return {
        "1 KB support request": lambda run: [("user", one_kb)],
        "1 KB support request, new text each run": lambda run: [
            ("user", fresh(f"Ticket {_letters(run)}. {one_kb}", run)[:1024])
        ],
        "chat: 2 KB history (re-sent) + 1 KB new user turn": lambda run: [
            *HISTORY,
            ("user", fresh(f"Ticket {_letters(run)}. {one_kb}", run)[:1024]),
        ],
        "32 KB document (stdlib docstrings)": lambda run: [("user", docstrings)],
        "32 KB stdlib docstrings, new text each run": lambda run: [("user", fresh(docstrings, run))],
        "32 KB dense PII, new text each run": lambda run: [("user", fresh(pii, run))],
        "32 KB adversarial near-misses": lambda run: [("user", adversarial)],
        "32 KB adversarial near-misses, new text each run": lambda run: [("user", fresh(adversarial, run))],
    }


def measure(runs: int, long_runs: int | None = None) -> dict[str, Any]:
    """p50/p99/max of the default input policy per input, and per scanner on the 32 KB document.

    Inputs of 8 KB or more are measured ``long_runs`` times (default ``max(20, runs // 10)``: with 20 runs
    their p99 is the slowest run; 100 or more give a p99 that one preempted run does not decide alone).
    """
    engine = GuardEngine(GuardConfig(enabled=True))
    policy = engine.policies[0]
    out: dict[str, Any] = {"scanners": [entry.name for entry in policy.input]}
    cases = inputs()
    # As the gateway does after start-up (server/app.py): the loaded models' objects leave the
    # collector's generations, so a full collection no longer walks them in the middle of a scan.
    gc.collect()
    gc.freeze()
    for label, messages in cases.items():
        chars = sum(len(text) for _, text in messages(0))
        count = runs if chars < 8192 else (long_runs or max(20, runs // 10))
        samples: list[int] = []
        per_scanner: dict[str, list[float]] = {}
        for index in range(count + 20):
            context = ScanContext("input", vault=Vault())
            texts = messages(index)
            started = time.perf_counter_ns()
            run = engine.run(policy.input, texts, context)
            elapsed = time.perf_counter_ns() - started
            if index >= 20:  # the first runs warm caches and lazy imports
                samples.append(elapsed)
                for entry in run.record():
                    per_scanner.setdefault(entry["scanner"], []).append(entry["ms"])
            if index == 19:
                gc.collect()
        ordered = sorted(samples)
        out[label] = {
            "chars": chars,
            "runs": count,
            "p50_ms": round(ordered[len(ordered) // 2] / 1e6, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] / 1e6, 3),
            "max_ms": round(ordered[-1] / 1e6, 3),
            "p50_ms_by_scanner": {k: round(statistics.median(v), 3) for k, v in per_scanner.items()},
            "p99_ms_by_scanner": {
                k: round(sorted(v)[min(len(v) - 1, int(0.99 * len(v)))], 3) for k, v in per_scanner.items()
            },
        }
        print(label, json.dumps(out[label]), file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--long-runs", type=int, help="runs of the inputs of 8 KB or more")
    args = parser.parse_args()
    print(json.dumps(measure(args.runs, args.long_runs)))
