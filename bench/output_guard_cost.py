"""Output guard cost (probe-guard finding 2): system_prompt_leak over a stream, a revision's scanner beside this tree's.

    nice -n 10 .venv/bin/python bench/output_guard_cost.py 2aca9cd      # thread CPU, one run, both side by side

The scanner is fed a stream's "whole" scope in 160-character windows, as the guard stage calls it (all text
released so far plus the new window, ``final`` on the last). Answers: filler prose, and a leak (the prompt's
sentences verbatim in the middle). The old scanner is quadratic: its longest cases are skipped (minutes).
"""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from opsgate.domain.guard_config import SystemPromptLeakScannerConfig  # noqa: E402
from opsgate.guard import output as this_tree  # noqa: E402
from opsgate.guard.base import ScanContext  # noqa: E402


def output_at(revision: str) -> types.ModuleType:
    """``guard/output.py`` as committed at ``revision``, loaded beside this tree's."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:src/opsgate/guard/output.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"output_{revision}")
    module.__file__ = str(ROOT / "src/opsgate/guard/output.py")
    exec(compile(source, f"output@{revision}", "exec"), module.__dict__)
    return module


def stream(scanner: Any, prompt: str, answer: str) -> tuple[float, float, Any]:
    """Total and worst-window thread CPU (s) of scanning ``answer`` as a stream, and the last result."""
    started = time.thread_time()
    worst, result = 0.0, None
    for end in range(160, len(answer) + 160, 160):
        window = time.thread_time()
        result = scanner.scan(answer[:end], ScanContext("output", system_prompt=prompt, final=end >= len(answer)))
        worst = max(worst, time.thread_time() - window)
    return time.thread_time() - started, worst, result


def main() -> None:
    old = output_at(sys.argv[1] if len(sys.argv) > 1 else "2aca9cd")
    config = SystemPromptLeakScannerConfig(scanner="system_prompt_leak")
    p2k = " ".join(
        f"Policy {i}: always answer customers of region {i} politely and in their language." for i in range(25)
    )
    p30k = " ".join(f"Rule number {i} says always be polite to user {i}." for i in range(600))
    cases = [("2 KB prompt", p2k, n, "filler") for n in (8_000, 32_000, 64_000)]
    cases += [("30 KB prompt", p30k, n, "filler") for n in (8_000, 16_000, 64_000)]
    cases += [("2 KB prompt", p2k, 32_000, "leak"), ("30 KB prompt", p30k, 32_000, "leak")]
    print("| prompt | answer | old: CPU s, worst window ms, verdict | this tree |")
    print("|---|---|---|---|")
    for label, prompt, size, kind in cases:
        filler = ("Here is a detailed explanation of the topic at hand. " * (size // 53 + 1))[:size]
        answer = filler if kind == "filler" else (filler[: size // 2] + " " + prompt + " " + filler)[:size]
        row = []
        for name, module in (("old", old), ("new", this_tree)):
            if name == "old" and ((prompt is p30k and size > 16_000) or size > 32_000):
                row.append("not run (quadratic: minutes)")
                continue
            total, worst, result = stream(module.SystemPromptLeakScanner(config), prompt, answer)
            row.append(f"{total:.3f} s, {worst * 1000:.1f} ms, {result.verdict} {result.score}")
        print(f"| {label} | {kind} {size // 1000} KB | {row[0]} | {row[1]} |", flush=True)


if __name__ == "__main__":
    main()
