"""Multi-replica soak: 3 gateway processes sharing PostgreSQL and Redis behind HAProxy, steady mixed traffic.

    .venv/bin/python bench/soak.py --duration 1800 --rate 20          # the issue's 30 minutes
    .venv/bin/python bench/soak.py --duration 120 --warmup 30         # a quick look

Traffic (all on 127.0.0.1, bounded by --duration): chat completions, streams, embeddings, repeated
temperature-0 questions (cache hits, cache in Redis), a "hot" user over its per-minute limit (429s)
and a "budget" user over its daily spend (429s); limits, cache and breakers are shared in Redis, the
request log in a fresh PostgreSQL schema. Measured after --warmup: each replica's RSS growth, p50/p99
per window (is p99 stable?), failures (anything but 200 and the expected 429s), lost records (every
answered request id must be in the log once the replicas drained), and the budget user's stored
spend against its budget. Results: bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.deploy.balancer import Balancer  # noqa: E402
from tests.deploy.processes import Replica  # noqa: E402
from tests.support import free_port  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
BUDGET = 0.0005  # the budget user's spend_per_day, in the price table's currency
HOT_RPM = 60


@dataclass
class Sample:
    """One request as the client saw it."""

    request_id: str
    kind: str
    status: int  # 0: no HTTP answer (transport error)
    latency: float
    at: float


def replica_config(path: Path, upstream: str, store: str, journal: Path, prefix: str, hot_rpm: int = HOT_RPM) -> Path:
    """A replica's config: shared store, cache, limits and breakers; prices so budgets apply."""
    deployment = {
        "type": "openai",
        "base_url": upstream,
        "model": "m",
        "timeouts": {"total": 60},
        "breaker": {"shared": REDIS, "key_prefix": f"{prefix}:breakers:"},
    }
    price = {"input_per_million": 1.0, "output_per_million": 2.0}
    data: dict[str, Any] = {
        "models": [
            {"name": "chat", "price": price, "deployments": [deployment]},
            {"name": "emb", "kind": "embedding", "price": price, "deployments": [{**deployment, "model": "e"}]},
        ],
        "record": {"store": store, "journal_dir": str(journal)},
        "cache": {"enabled": True, "store": REDIS, "key_prefix": f"{prefix}:cache:"},
        "limits": {
            "enabled": True,
            "redis": REDIS,
            "key_prefix": f"{prefix}:limits:",
            "rules": [
                {"per": "user", "requests_per_minute": hot_rpm},
                {"per": "user", "spend_per_day": BUDGET},
            ],
        },
    }
    path.write_text(yaml.safe_dump(data))
    return path


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Traffic:
    """Client threads at a total ``rate`` of requests per second, mixed per request number."""

    def __init__(self, url: str, run: str, rate: float, threads: int, until: float) -> None:
        self.url = url
        self.run = run
        self.interval = threads / rate
        self.until = until
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads)
        self._futures = [self._pool.submit(self._client, i) for i in range(threads)]

    def _client(self, worker: int) -> None:
        rng = random.Random(worker)
        with httpx.Client(timeout=60) as client:
            n = 0
            next_at = time.monotonic() + rng.random() * self.interval
            while time.monotonic() < self.until:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += self.interval
                self._one(client, rng, f"soak-{self.run}-{worker}-{n}", n)
                n += 1

    def _one(self, client: httpx.Client, rng: random.Random, request_id: str, n: int) -> None:
        slot = n % 10
        user = f"u{rng.randrange(500)}"
        chat: dict[str, Any] = {
            "model": "chat",
            "messages": [{"role": "user", "content": f"delay=0.02 chunks=3 {request_id}"}],  # unique: no cache hit
            "max_tokens": 16,
            "user": user,
        }
        kind, path, body = "chat", "/v1/chat/completions", chat
        if slot in (4, 5):
            kind, body = (
                "stream",
                {**chat, "stream": True, "messages": [{"role": "user", "content": "chunks=8 gap=0.01"}]},
            )
        elif slot == 6:
            kind, path, body = "embedding", "/v1/embeddings", {"model": "emb", "input": f"text {n}", "user": user}
        elif slot == 7:
            question = f"delay=0.02 cached question {rng.randrange(5)}"
            kind, body = "cached", {**chat, "temperature": 0, "messages": [{"role": "user", "content": question}]}
        elif slot == 8:
            kind, body = "hot", {**chat, "user": "hot"}
        elif slot == 9:
            kind, body = "budget", {**chat, "user": "budget"}
        started = time.monotonic()
        status = 0
        try:
            if kind == "stream":
                with client.stream("POST", self.url + path, json=body, headers={"X-Request-Id": request_id}) as answer:
                    text = "".join(answer.iter_text())
                    status = answer.status_code if text.rstrip().endswith("[DONE]") or answer.status_code != 200 else 0
            else:
                status = client.post(self.url + path, json=body, headers={"X-Request-Id": request_id}).status_code
        except httpx.HTTPError:
            status = 0
        with self._lock:
            self.samples.append(Sample(request_id, kind, status, time.monotonic() - started, started))

    def join(self) -> None:
        for future in self._futures:
            future.result()
        self._pool.shutdown()


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else 0.0


def stored(schema: str, run: str) -> tuple[set[str], float, int]:
    """Request ids stored for this run, the budget user's stored spend, and its stored successes."""
    with psycopg.connect(f"{PG}?options=-csearch_path%3D{schema}") as conn:
        ids = {
            str(row[0])
            for row in conn.execute(
                "SELECT client_request_id FROM requests WHERE client_request_id LIKE %s", [f"soak-{run}-%"]
            )
        }
        row = conn.execute(
            "SELECT coalesce(sum(cost), 0), count(*) FROM requests WHERE user_id = 'budget' AND status = 200"
        ).fetchone()
        assert row is not None
        return ids, float(row[0]), int(row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=1800.0, help="Seconds of traffic (the issue: 1800).")
    parser.add_argument("--warmup", type=float, default=120.0, help="Seconds left out of RSS growth and latency.")
    parser.add_argument("--rate", type=float, default=20.0, help="Requests per second, all clients together.")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--window", type=float, default=60.0, help="Seconds per p99 window.")
    parser.add_argument("--hot-rpm", type=int, default=HOT_RPM, help="Requests per minute allowed per user.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/soak.json")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    schema = f"opsgate_soak_{run}"
    work = Path(tempfile.mkdtemp(prefix="opsgate-soak-"))
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    store = f"{PG}?options=-csearch_path%3D{schema}"
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.deploy.upstream", "--port", str(upstream_port), "--tag", "soak"], cwd=ROOT
    )
    replicas: dict[str, Replica] = {}
    balancer: Balancer | None = None
    try:
        for index in range(3):
            name = f"r{index}"
            config = replica_config(
                work / f"{name}.yaml",
                f"http://127.0.0.1:{upstream_port}/v1",
                store,
                work / f"journal-{name}",
                f"soak{run}",
                args.hot_rpm,
            )
            replicas[name] = Replica(config, free_port(), work / f"{name}.log", OPSGATE_DRAIN_DELAY_SECONDS="1")
            replicas[name].start(timeout=120)
        balancer = Balancer(work, {name: r.port for name, r in replicas.items()}).start()
        for name in replicas:
            balancer.wait_state(name, "UP")
        started = time.monotonic()
        traffic = Traffic(balancer.url, run, args.rate, args.threads, started + args.duration)
        rss: dict[str, list[tuple[float, int]]] = {name: [] for name in replicas}
        while time.monotonic() < started + args.duration:
            for name, replica in replicas.items():
                assert replica.process is not None
                rss[name].append((time.monotonic() - started, rss_kib(replica.process.pid)))
            time.sleep(min(10.0, max(0.1, started + args.duration - time.monotonic())))
        traffic.join()
        for replica in replicas.values():
            replica.stop()  # SIGTERM: drain and store the journal
        ids, budget_spent, budget_ok = stored(schema, run)
    finally:
        if balancer is not None:
            balancer.stop()
        for replica in replicas.values():
            replica.stop()
        upstream.terminate()
        upstream.wait(10)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(f"soak{run}:*"):
            client.delete(key)

    samples = traffic.samples
    after = [s for s in samples if s.at - started >= args.warmup]
    answered = {s.request_id for s in samples if s.status}
    failures = [s for s in samples if s.status not in (200, 429)]
    unexpected_429 = [s for s in samples if s.status == 429 and s.kind not in ("hot", "budget")]
    ok_latency = [s.latency for s in after if s.status == 200 and s.kind != "stream"]
    windows: list[dict[str, float]] = []
    edge = args.warmup
    while edge < args.duration:
        inside = [
            s.latency
            for s in after
            if s.status == 200 and s.kind != "stream" and edge <= s.at - started < edge + args.window
        ]
        if len(inside) >= 20:
            windows.append(
                {
                    "from_s": edge,
                    "requests": len(inside),
                    "p50_ms": 1000 * percentile(inside, 0.5),
                    "p99_ms": 1000 * percentile(inside, 0.99),
                }
            )
        edge += args.window
    growth: dict[str, dict[str, float]] = {}
    for name, points in rss.items():
        base = [kib for t, kib in points if t >= args.warmup][:1] or [points[0][1]]
        last = statistics.mean(kib for _, kib in points[-3:])
        growth[name] = {
            "rss_at_warmup_mib": base[0] / 1024,
            "rss_end_mib": last / 1024,
            "growth_pct": 100 * (last - base[0]) / base[0],
        }
    p99s = [w["p99_ms"] for w in windows]
    result = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rate_target_per_s": args.rate,
        "requests": len(samples),
        "by_kind": {k: sum(1 for s in samples if s.kind == k) for k in sorted({s.kind for s in samples})},
        "status_counts": {
            str(c): sum(1 for s in samples if s.status == c) for c in sorted({s.status for s in samples})
        },
        "failures": len(failures),
        "failure_examples": [s.__dict__ for s in failures[:5]],
        "unexpected_429": len(unexpected_429),
        "lost_records": len(answered - ids),
        "lost_examples": sorted(answered - ids)[:5],
        "budget": {
            "limit": BUDGET,
            "stored_spend": budget_spent,
            "successes": budget_ok,
            "overshot": budget_spent > BUDGET + 1e-12,
        },
        "latency_after_warmup_ms": {
            "p50": 1000 * percentile(ok_latency, 0.5),
            "p99": 1000 * percentile(ok_latency, 0.99),
        },
        "p99_windows": windows,
        "p99_max_over_min": (max(p99s) / min(p99s)) if p99s else None,
        "rss": growth,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "p99_windows"}, indent=2))


if __name__ == "__main__":
    main()
