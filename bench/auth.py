"""What authenticating a request costs: a cached key check, and a cache miss on SQLite and PostgreSQL.

What it does (a few seconds):
  1. creates a service key in a scratch SQLite file and (with ``--postgres``) a scratch PostgreSQL schema;
  2. times ``Authenticator.authenticate`` for that key with a warm cache (what nearly every request
     pays: a SHA-256 of the key and a dict lookup) over ``--calls`` calls, and the bootstrap admin key;
  3. times cache misses (TTL 0: every call reads the store in a worker thread and checks the HMAC);
  4. prints a table (µs per call, median of ``--rounds``) and writes bench/results/auth.json.

End to end, ``bench/overhead.py --auth`` runs the overhead benchmark with auth on (a real key).

    .venv/bin/python bench/auth.py
    .venv/bin/python bench/auth.py --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import machine, median, postgres_schema, write_json
from opsgate.auth.authenticator import Authenticator
from opsgate.auth.key_store import KeySpec, KeyStore
from opsgate.domain.auth_config import AuthConfig
from opsgate.store.record_log import open_store

ADMIN_KEY = "bench-admin-key-0123456789abcdef"


async def per_call_us(auth: Authenticator, secret: str, calls: int) -> float:
    await auth.authenticate(secret)  # warm
    start = time.perf_counter()
    for _ in range(calls):
        await auth.authenticate(secret)
    return (time.perf_counter() - start) / calls * 1e6


def measure(store_url: str, calls: int, rounds: int) -> dict[str, float]:
    store = open_store(store_url)
    keys = KeyStore(store)
    secret = keys.create(KeySpec(tenant="bench", role="service"), "bench").secret
    cached = Authenticator(AuthConfig(enabled=True, admin_key=ADMIN_KEY, cache_ttl_seconds=3600), lambda: keys)  # type: ignore[arg-type]
    uncached = Authenticator(AuthConfig(enabled=True, cache_ttl_seconds=0), lambda: keys)
    out: dict[str, list[float]] = {"cached_key_us": [], "bootstrap_admin_us": [], "cache_miss_us": []}
    for _ in range(rounds):
        out["cached_key_us"].append(asyncio.run(per_call_us(cached, secret, calls)))
        out["bootstrap_admin_us"].append(asyncio.run(per_call_us(cached, ADMIN_KEY, calls)))
        out["cache_miss_us"].append(asyncio.run(per_call_us(uncached, secret, max(calls // 100, 50))))
    store.close()
    return {name: median(values) for name, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", default=None, help="also measure misses against this PostgreSQL")
    parser.add_argument("--output", default="auth.json")
    args = parser.parse_args()
    info = machine()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="opsgate-bench-auth-") as tmp, ExitStack() as stack:
        results["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'keys.db'}", args.calls, args.rounds)
        if args.postgres:
            schema = stack.enter_context(postgres_schema(args.postgres))
            results["postgres"] = measure(schema, args.calls, args.rounds)
    lines = ["| store | cached key (µs) | bootstrap admin key (µs) | cache miss (µs) |", "|---|---:|---:|---:|"]
    for name, row in results.items():
        lines.append(
            f"| {name} | {row['cached_key_us']:.2f} | {row['bootstrap_admin_us']:.2f} | {row['cache_miss_us']:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    command = " ".join([".venv/bin/python", "bench/auth.py", *sys.argv[1:]])
    path = write_json(
        args.output,
        {"benchmark": "auth", "machine": info, "command": command, "results": results, "markdown": table},
    )
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
