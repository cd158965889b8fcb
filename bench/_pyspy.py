"""Summarise a py-spy ``--format raw`` profile: top functions by own and total time, by package and thread.

Used by bench/overhead.py ``--profile``; kept apart so any benchmark that samples a process can use it.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any


def summarise_raw(raw: Path, keep: Path) -> dict[str, Any]:
    """The summary of py-spy's raw output ``raw``; collapsed stacks (lines merged) are written to ``keep``."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()
    by_thread: collections.Counter[str] = collections.Counter()
    stacks: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        first = stack.split(";", 1)[0]
        thread = first.split(": ", 1)[1] if first.startswith("thread (") and ": " in first else "?"
        frames = [_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        by_thread[thread] += count
        own[frames[-1]] += count
        by_package[_package(frames[-1])] += count
        for name in set(frames):
            total[name] += count
        stacks[";".join([thread, *frames])] += count
    # collapsed stacks (flamegraph.pl / speedscope input), line numbers merged to keep the file small
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.write_text("".join(f"{stack} {count}\n" for stack, count in stacks.most_common()))

    def top(counter: collections.Counter[str], n: int) -> list[dict[str, Any]]:
        return [{"function": name, "pct": round(100.0 * c / samples, 1)} for name, c in counter.most_common(n)]

    return {
        "samples": samples,
        "by_thread": top(by_thread, 8),
        "own_by_package": top(by_package, 12),
        "top_own": top(own, 20),
        "top_total": top(total, 40),
        "collapsed_stacks": str(keep),
    }


def _package(frame: str) -> str:
    """The top-level package of a shortened frame (``Runner.run`` in asyncio stands for the C event loop)."""
    path = frame.rsplit("(", 1)[-1].rstrip(")")
    if frame.startswith("Runner.run "):
        return "event loop (uvloop, C; includes socket syscalls)"
    if "/" in path:
        return path.split("/", 1)[0]
    return path if path.endswith(".py") or path.startswith("<frozen") else "other"


_SITE = re.compile(r".*/(site-packages|lib/python3\.\d+|src)/")


def _frame(frame: str) -> str:
    """``func (path/to/file.py:123)`` → ``func (pkg/file.py)``: merge lines, shorten paths."""
    match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    return f"{name} ({_SITE.sub('', path)})"
