"""The breaker's per-call cost while a rule is met and held back: old vs new, alternating rounds.

Tenant ``a`` fails 9 calls in 10, five light tenants succeed the tenth: every failure meets both
rules, and each is held back (the others' successes). The old breaker is loaded from git (``--base``).

Run:

    nice -n 10 .venv/bin/python bench/breaker_held_back.py [--calls 100000] [--rounds 5] [--base REV]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from breaker_attribution import load_old
from opsgate.domain.reliability_config import BreakerConfig
from opsgate.routing.breaker import CircuitBreaker


def run(cls: Any, calls: int) -> float:
    """ns per ``allow()`` + ``record()``."""
    now = [0.0]
    breaker = cls(BreakerConfig(), lambda: now[0])
    start = time.perf_counter()
    for i in range(calls):
        now[0] += 0.001
        breaker.allow()
        if i % 10 == 0:
            breaker.record(True, f"t{i % 50}")
        else:
            breaker.record(False, "a")
    assert breaker.state == "closed"
    return (time.perf_counter() - start) / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base", default="4eb5b62~1")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    old = load_old(args.base, "breaker").CircuitBreaker
    results: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        results["old"].append(run(old, args.calls))
        results["new"].append(run(CircuitBreaker, args.calls))
    for name, values in results.items():
        print(f"{name}: median {statistics.median(values):,.0f} ns/call, rounds {[round(v) for v in values]}")


if __name__ == "__main__":
    main()
