"""``opsgate`` with CPython GC pause accounting, for ``bench/overhead.py --gc-probe``.

Same as ``.venv/bin/opsgate ARGS...`` but it times every garbage collection (per generation: count,
total and longest pause) and, on SIGUSR1, writes the running totals as JSON to $OPSGATE_GC_PROBE_OUT.
With OPSGATE_GC_FREEZE=SECONDS it also calls ``gc.collect(); gc.freeze()`` that long after start,
to show what freezing the start-up heap would change. It changes nothing in opsgate itself.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
from typing import Any

# count and total_ms are running totals; max_ms is the longest pause since the previous dump
_stats = {generation: {"count": 0, "total_ms": 0.0, "max_ms": 0.0} for generation in range(3)}
_started = [0.0]


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    pause_ms = (time.perf_counter() - _started[0]) * 1000.0
    entry = _stats[info["generation"]]
    entry["count"] += 1
    entry["total_ms"] += pause_ms
    entry["max_ms"] = max(entry["max_ms"], pause_ms)


def _dump(*_: object) -> None:
    path = os.environ.get("OPSGATE_GC_PROBE_OUT")
    if path:
        data = {
            "generations": _stats,
            "tracked_objects": len(gc.get_objects()),
            "frozen": gc.get_freeze_count(),
        }
        tmp = path + ".tmp"
        with open(tmp, "w") as out:
            json.dump(data, out)
        os.replace(tmp, path)
    for entry in _stats.values():
        entry["max_ms"] = 0.0


def main() -> None:
    gc.callbacks.append(_callback)
    signal.signal(signal.SIGUSR1, _dump)
    freeze_after = float(os.environ.get("OPSGATE_GC_FREEZE", "0") or 0)
    if freeze_after > 0:

        def freeze() -> None:
            gc.collect()
            gc.freeze()

        threading.Timer(freeze_after, freeze).start()
    from opsgate.cli.main import cli

    sys.argv = ["opsgate", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
