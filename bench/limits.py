"""What the limits stage costs: opsgate with limits off, in-process counters, and Redis, side by side.

What it does, in one run (just under a minute with the defaults):
  1. starts the fake upstream (tests/fake_upstream.py) in its own process, and three ``opsgate serve``
     processes (one worker each, no request log) in front of it: limits off, limits in memory, and
     limits in Redis (127.0.0.1:6379, under a scratch key prefix that is deleted afterwards);
  2. the two with limits get rules on every kind of counter — requests, tokens, concurrent, spend per
     day (per user) and tokens per key and model — set far above the load, so nothing is refused and
     every request reserves and settles ~7 counters; all load comes from one user and key (hot keys);
  3. checks each gateway answers 200 (and that limits are on where they should be);
  4. for each connection count (default 1 and 16): a warm-up, then a measured wrk run against each
     gateway, back to back, in three rounds (alternating the order, so drift cancels out);
     records req/s, p50/p99 latency, non-2xx, and the gateway's CPU use per request;
  5. prints a table of the median of the rounds (with the added p50 and CPU per request, and the
     throughput relative to "off") and writes bench/results/limits.json.

The gateway is pinned to the first CPU, the upstream and wrk to the rest (``--no-pin`` to turn off).
Redis itself runs wherever the system put it.

Run (needs ``apt-get install -y wrk`` and a Redis on 127.0.0.1:6379):

    .venv/bin/python bench/limits.py
    .venv/bin/python bench/limits.py --duration 5 --warmup 1 --rounds 3 --connections 1 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import redis
import yaml
from rich.console import Console
from rich.table import Table

from _common import (
    ROOT,
    VENV_BIN,
    child,
    children_cpu_seconds,
    cpu_seconds,
    free_port,
    http,
    machine,
    median,
    system_busy_seconds,
    wait_http_ok,
    write_json,
)
from overhead import WRK_SCRIPT, need, plan_cpus, run_wrk

REDIS_URL = "redis://127.0.0.1:6379/0"
REQUEST_BODY: dict[str, Any] = {
    "model": "fake",
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 16,
    "user": "bench-user",
}
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
BIG = 10**12  # limits nothing reaches: every request reserves and settles, none is refused
RULES: list[dict[str, Any]] = [
    {"per": "user", "requests_per_minute": BIG, "tokens_per_minute": BIG, "concurrent": 10**6, "spend_per_day": BIG},
    {"per": "key+model", "tokens_per_minute": BIG},
]
# The fake upstream keeps every request it saw (for tests); here only the last, or it slows down as
# the run goes on and whichever gateway is measured last looks slower.
UPSTREAM_MAIN = (
    "import collections, sys, threading; sys.path.insert(0, sys.argv[2]); "
    "from tests.fake_upstream import FakeUpstream; u = FakeUpstream(); u.port = int(sys.argv[1]); "
    "u.requests = collections.deque(maxlen=1); u.start(); threading.Event().wait()"
)
console = Console(width=130)


@contextmanager
def fake_upstream(cpus: set[int] | None, tmp: Path) -> Iterator[tuple[str, int]]:
    """The tests' fake OpenAI upstream in its own process; yields its /v1 base URL and pid."""
    port = free_port()
    log = tmp / "upstream.log"
    argv = [str(VENV_BIN / "python"), "-c", UPSTREAM_MAIN, str(port), str(ROOT)]
    with child(argv, cpus=cpus, log=log) as proc:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:  # no GET route: any HTTP answer means it listens
            try:
                http("GET", base + "/v1/models", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the fake upstream did not start:\n" + log.read_text()) from None
                time.sleep(0.1)
        yield base + "/v1", proc.pid


@contextmanager
def gateway(
    name: str, upstream: str, limits: dict[str, Any], cpus: set[int] | None, tmp: Path
) -> Iterator[tuple[int, int]]:
    """``opsgate serve`` with ``limits``; yields its port and pid."""
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "models": [
            {
                "name": "fake",
                "price": {"input_per_million": 1.0, "output_per_million": 2.0},
                "deployments": [{"type": "openai", "base_url": upstream, "model": "fake-model"}],
            }
        ],
        "record": {"store": None},
        "limits": limits,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / f"{name}.log"
    argv = [str(VENV_BIN / "opsgate"), "serve", "--config", str(path), "--log-level", "warning"]
    with child(argv, cpus=cpus, log=log, cwd=tmp) as proc:
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", proc, 60, name, log)
        yield port, proc.pid


def check(name: str, port: int, limited: bool) -> None:
    """One request: 200 with the upstream's answer, and rate-limit headers exactly when limits are on."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    request = urllib.request.Request(url, data=json.dumps(REQUEST_BODY).encode(), method="POST", headers=HEADERS)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, f"{name}: HTTP {response.status}"
        has_headers = response.headers.get("x-ratelimit-remaining-requests") is not None
    if has_headers != limited:
        raise SystemExit(f"{name}: rate-limit headers {'missing' if limited else 'present'}")


def measure(
    wrk: str,
    script: Path,
    url: str,
    pid: int,
    connections: int,
    args: argparse.Namespace,
    cpus: set[int] | None,
    own_pids: list[int],
) -> dict[str, Any]:
    """A warm-up, then one measured wrk run; with the gateway's CPU use over it, and everyone else's.

    ``other_load_pct``: CPU (% of one core) used by processes outside this benchmark meanwhile (the
    machine may be shared; a busy neighbour makes a run's numbers worse).
    """
    run_wrk(wrk, script, url, connections, args.warmup, cpus)
    ours = [os.getpid(), *own_pids]
    cpu_before, own_before = cpu_seconds(pid), sum(cpu_seconds(p) for p in ours) + children_cpu_seconds()
    busy_before, wall_before = system_busy_seconds(), time.monotonic()
    data = run_wrk(wrk, script, url, connections, args.duration, cpus)
    wall = time.monotonic() - wall_before
    own = sum(cpu_seconds(p) for p in ours) + children_cpu_seconds() - own_before
    requests = max(1, data["requests"])
    return {
        "connections": connections,
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000.0,
        "p99_ms": data["p99_us"] / 1000.0,
        "requests": data["requests"],
        "non_2xx": data["status_errors"],
        "socket_errors": data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"],
        "gateway_cpu_us_per_request": (cpu_seconds(pid) - cpu_before) / requests * 1e6,
        "other_load_pct": max(0.0, (system_busy_seconds() - busy_before - own) / wall * 100.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=2.5, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=0.4, help="seconds of warm-up before each run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating the order of the gateways")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = parser.parse_args()
    wrk = need("wrk")
    gateway_cpus, load_cpus = plan_cpus(not args.no_pin)
    prefix = f"opsgate-bench:{uuid.uuid4().hex[:8]}:"
    targets = {
        "off": {"enabled": False},
        "memory": {"enabled": True, "rules": RULES},
        "redis": {"enabled": True, "rules": RULES, "redis": REDIS_URL, "key_prefix": prefix},
    }
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="opsgate-bench-limits-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        script = tmp / "wrk.lua"
        auth = '\nwrk.headers["Authorization"] = "Bearer sk-bench"'
        script.write_text(WRK_SCRIPT.format(body=json.dumps(REQUEST_BODY)).replace("\n\ndone", auth + "\n\ndone"))
        upstream, upstream_pid = stack.enter_context(fake_upstream(load_cpus, tmp))
        started: dict[str, tuple[int, int]] = {}
        for name, limits in targets.items():
            started[name] = stack.enter_context(gateway(name, upstream, limits, gateway_cpus, tmp))
            check(name, started[name][0], limited=limits["enabled"])
        order = list(started.items())
        own_pids = [pid for _, pid in started.values()] + [upstream_pid]
        try:
            for round_ in range(args.rounds):
                for connections in args.connections:
                    for name, (port, pid) in order if round_ % 2 == 0 else reversed(order):
                        console.print(f"[dim]round {round_ + 1}: {name}, {connections} connection(s)…[/dim]")
                        url = f"http://127.0.0.1:{port}/v1/chat/completions"
                        run = measure(wrk, script, url, pid, connections, args, load_cpus, own_pids)
                        runs.append(run | {"limits": name})
        finally:
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
    report(runs, args, gateway_cpus, load_cpus)


def report(
    runs: list[dict[str, Any]], args: argparse.Namespace, gcpus: set[int] | None, lcpus: set[int] | None
) -> None:
    """Print the table (medians over rounds) and write bench/results/limits.json."""
    summary: list[dict[str, Any]] = []
    for connections in args.connections:
        for name in ("off", "memory", "redis"):
            mine = [r for r in runs if r["limits"] == name and r["connections"] == connections]
            keys = ("rps", "p50_ms", "p99_ms", "gateway_cpu_us_per_request", "other_load_pct")
            middle = {key: median([r[key] for r in mine]) for key in keys}
            errors = sum(r["non_2xx"] + r["socket_errors"] for r in mine)
            summary.append(
                {"limits": name, "connections": connections, "rounds": len(mine), **middle, "errors": errors}
            )
    base = {r["connections"]: r for r in summary if r["limits"] == "off"}
    table = Table(title="opsgate limits stage (fake upstream, one gateway worker; median of rounds)")
    columns = ("limits", "conns", "req/s", "vs off", "p50 ms", "+p50 ms", "p99 ms", "CPU µs/req", "+CPU µs")
    columns += ("other load %", "errors")
    for column in columns:
        table.add_column(column, justify="left" if column == "limits" else "right")
    for row in summary:
        off = base[row["connections"]]
        row["rps_vs_off"] = row["rps"] / off["rps"]
        row["added_p50_ms"] = row["p50_ms"] - off["p50_ms"]
        row["added_cpu_us_per_request"] = row["gateway_cpu_us_per_request"] - off["gateway_cpu_us_per_request"]
        table.add_row(
            row["limits"],
            str(row["connections"]),
            f"{row['rps']:.0f}",
            f"{row['rps_vs_off']:.2f}x",
            f"{row['p50_ms']:.3f}",
            f"{row['added_p50_ms']:+.3f}",
            f"{row['p99_ms']:.3f}",
            f"{row['gateway_cpu_us_per_request']:.0f}",
            f"{row['added_cpu_us_per_request']:+.0f}",
            f"{row['other_load_pct']:.0f}",
            str(row["errors"]),
        )
    console.print(table)
    bad = [r for r in summary if r["errors"]]
    if bad:
        console.print(f"[red]{len(bad)} run(s) had errors: their numbers do not count[/red]")
    path = write_json(
        "limits.json",
        {
            "benchmark": "limits",
            "machine": machine(),
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "connections": args.connections,
                "gateway_cpus": sorted(gcpus) if gcpus else None,
                "load_cpus": sorted(lcpus) if lcpus else None,
                "rules": RULES,
                "request_body": REQUEST_BODY,
                "redis": REDIS_URL,
            },
            "summary": summary,
            "runs": runs,
        },
    )
    console.print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
