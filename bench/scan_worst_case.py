"""Input scans built to be slow, and how long a scan past its deadline keeps its thread: two trees side by side.

    git worktree add /tmp/scan-base 04b1253
    nice -n 10 .venv/bin/python bench/scan_worst_case.py --base /tmp/scan-base/src [--new src] [--runs 3]

For each hostile input: the thread CPU of the ``secrets`` and ``prompt_injection`` scans with no deadline
(the whole scan), and with a deadline 5 ms after the start (how long the guard pool's thread stays busy
after the request's budget has run out; the scan raises ``ScanDeadline`` where it can stop). Both trees
in one process, alternating; median of ``--runs``; a case whose base scan would run past ``--cap-s`` is
measured once at a smaller size and marked so.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent

_PROSE = "The quarterly report covers revenue, churn and the hiring plan for the platform team. Each section lists it. "
CASES: dict[str, tuple[str, str, int]] = {
    # name: (scanner, repeated unit, characters)
    "AWS key ids glued into one token, 32 KB": ("secrets", "AKIAQWERTYUIOPASDFGH", 32_000),
    "AWS key ids glued into one token, 80 KB": ("secrets", "AKIAQWERTYUIOPASDFGH", 80_000),
    "unclosed PEM headers, 156 KB": ("secrets", "-----BEGIN RSA PRIVATE KEY----- MIIEow ", 156_000),
    "prose, 4 MB (secrets)": ("secrets", _PROSE, 4_000_000),
    "prose, 4 MB (injection)": ("prompt_injection", _PROSE, 4_000_000),
    "disguises undone (leet, spacing, dots, rot13), 1 MB": (
        "prompt_injection",
        "rot13 reverse backwards 1gn0r3 pr3v10u5 i g n o r e %41%42 s.y.s.t.e.m ",
        1_000_000,
    ),
}


def _tree(src: Path) -> dict[str, ModuleType]:
    """The guard modules of the ``opsgate`` under ``src``, imported fresh; ``sys.modules`` left without them."""
    sys.path.insert(0, str(src))
    try:
        return {
            name: importlib.import_module(f"opsgate.{name}")
            for name in ("domain.guard_config", "guard.base", "guard.secrets", "guard.injection")
        }
    finally:
        sys.path.remove(str(src))
        for name in [name for name in sys.modules if name == "opsgate" or name.startswith("opsgate.")]:
            del sys.modules[name]


def _scanners(tree: dict[str, ModuleType]) -> dict[str, Any]:
    config = tree["domain.guard_config"]
    return {
        "secrets": tree["guard.secrets"].SecretsScanner(config.SecretsScannerConfig(scanner="secrets")),
        "prompt_injection": tree["guard.injection"].InjectionScanner(
            config.InjectionScannerConfig(scanner="prompt_injection")
        ),
    }


def _scan_ms(tree: dict[str, ModuleType], scanner: Any, text: str, deadline_ms: float | None) -> float:
    context = tree["guard.base"].ScanContext("input")
    started_ns = time.perf_counter_ns()
    if deadline_ms is not None:
        context.deadline_ns = started_ns + int(deadline_ms * 1e6)
    started = time.thread_time()
    try:
        scanner.scan(text, context)
    except tree["guard.base"].ScanDeadline:
        pass
    return (time.thread_time() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, required=True, help="src/ of the tree to compare with")
    parser.add_argument("--new", type=Path, default=_ROOT / "src")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    trees = {"base": _tree(args.base), "new": _tree(args.new)}
    scanners = {label: _scanners(tree) for label, tree in trees.items()}
    print("| input | scanner | whole scan, base / new ms | with a 5 ms deadline, base / new ms |")
    print("|---|---|---|---|")
    for number, (name, (kind, unit, size)) in enumerate(CASES.items()):
        samples: dict[tuple[str, bool], list[float]] = {}
        for run in range(args.runs):
            # A new text each run (a digit suffix): the injection scanner remembers texts it has read.
            text = (f"{number}.{run} " + unit * (size // len(unit) + 1))[:size]
            for label in ("base", "new") if run % 2 == 0 else ("new", "base"):
                for deadline in (None, 5.0):
                    samples.setdefault((label, deadline is not None), []).append(
                        _scan_ms(trees[label], scanners[label][kind], text + str(deadline), deadline)
                    )
        cells = [
            " / ".join(f"{statistics.median(samples[(label, bounded)]):,.0f}" for label in ("base", "new"))
            for bounded in (False, True)
        ]
        print(f"| {name} | {kind} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
