"""What per-tenant breaker attribution costs on the request path: old vs new ``CircuitBreaker``, side by side.

The old breaker is loaded from git (``--base``, default the parent of the attribution commit); both run
``allow()`` + ``record(...)`` per call, as ``Router._attempt`` does, in alternating rounds on one
process, with a fake clock that advances 1 ms per call (the 30 s window holds 30,000 calls once warm).

Scenarios:
  ok_1_tenant     every call succeeds, one tenant (the common case)
  ok_50_tenants   every call succeeds, 50 tenants round robin
  fail5_50        50 tenants, every 20th call fails (the old rate check summed the window per failure)
  shared_ok_50    the Redis-shared breaker's request path (no sync attached: local breaker + report),
                  50 tenants, every call succeeds; the old shared_breaker.py is loaded from git too

Run:

    nice -n 10 .venv/bin/python bench/breaker_attribution.py [--calls 200000] [--rounds 5] [--base REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsgate.domain.reliability_config import BreakerConfig
from opsgate.routing.breaker import CircuitBreaker
from opsgate.routing.shared_breaker import SharedCircuitBreaker

ROOT = Path(__file__).resolve().parent.parent


def load_old(rev: str, name: str) -> Any:
    source = subprocess.run(
        ["git", "show", f"{rev}:src/opsgate/routing/{name}.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.replace("from opsgate.routing.breaker import", "from breaker_old import")
    path = Path(tempfile.mkdtemp()) / f"{name}_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"{name}_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"{name}_old"] = module
    spec.loader.exec_module(module)
    return module


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def run(make: Callable[[Clock], Any], with_tenant: bool, tenants: int, fail_every: int, calls: int) -> float:
    """Nanoseconds per allow() + record() over ``calls`` calls, after 30,000 warm-up calls (a full window)."""
    names = [f"tenant-{i}" for i in range(tenants)]
    clock = Clock()
    breaker = make(clock)
    allow, record = breaker.allow, breaker.record
    outcomes = [(i % fail_every != fail_every - 1) if fail_every else True for i in range(calls + 30_000)]
    who = [names[i % tenants] for i in range(calls + 30_000)]
    for i in range(30_000):
        allow()
        record(outcomes[i], who[i]) if with_tenant else record(outcomes[i])
    started = time.perf_counter_ns()
    if with_tenant:
        for i in range(30_000, 30_000 + calls):
            allow()
            record(outcomes[i], who[i])
    else:
        for i in range(30_000, 30_000 + calls):
            allow()
            record(outcomes[i])
    elapsed = (time.perf_counter_ns() - started) / calls
    assert breaker.state == "closed"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base", default="4b5d569~1")
    args = parser.parse_args()
    old_breaker = load_old(args.base, "breaker").CircuitBreaker
    old_shared = load_old(args.base, "shared_breaker").SharedCircuitBreaker
    config = BreakerConfig()  # the defaults: 5 consecutive, 50 % of >= 20 calls in 30 s
    shared = BreakerConfig(shared="redis://127.0.0.1:6379/0")  # never connected here
    scenarios: dict[str, tuple[int, int, Callable[[Clock], Any], Callable[[Clock], Any]]] = {
        "ok_1_tenant": (1, 0, lambda c: old_breaker(config, c), lambda c: CircuitBreaker(config, c)),
        "ok_50_tenants": (50, 0, lambda c: old_breaker(config, c), lambda c: CircuitBreaker(config, c)),
        "fail5_50": (50, 20, lambda c: old_breaker(config, c), lambda c: CircuitBreaker(config, c)),
        "shared_ok_50": (
            50,
            0,
            lambda c: old_shared(shared, "bench#0", c),
            lambda c: SharedCircuitBreaker(shared, "bench#0", c),
        ),
    }
    for name, (tenants, fail_every, make_old, make_new) in scenarios.items():
        old: list[float] = []
        new: list[float] = []
        for _ in range(args.rounds):  # taking turns: the machine is shared
            old.append(run(make_old, False, tenants, fail_every, args.calls))
            new.append(run(make_new, True, tenants, fail_every, args.calls))
        o, n = statistics.median(old), statistics.median(new)
        print(f"{name:14s} old {o:7.0f} ns/call  new {n:7.0f} ns/call  ({n - o:+.0f} ns, x{n / o:.2f})")


if __name__ == "__main__":
    main()
