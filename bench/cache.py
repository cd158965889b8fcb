"""Response cache: miss vs hit latency through opsgate, and the upstream calls the cache saved.

What it does, in one run (well under a minute with the defaults):
  1. starts a minimal OpenAI-compatible upstream (aiohttp, in a child process; it counts the calls
     it gets and can add ``--upstream-ms`` of latency per call, like a model would);
  2. for each scenario starts ``opsgate serve`` (one worker, its own temp directory, the default
     durable request log on) with the cache on, in front of that upstream:
       memory    in-process store, exact keys
       redis     Redis store (skipped when no Redis answers at --redis), exact keys, own key prefix
       semantic  in-process store + semantic cache with the embedded MiniLM (temperature 0);
                 the hit phase sends paraphrases ("what's the capital of france"), not repeats
  3. per scenario: a few warm-up requests, then N distinct requests (all misses), then the same N
     again (hits; paraphrased for semantic), one at a time over one keep-alive connection; latency
     is measured by the client, end to end;
  4. prints a table and writes bench/results/cache.json.

Run:

    .venv/bin/python bench/cache.py
    .venv/bin/python bench/cache.py --requests 300 --upstream-ms 50 --scenarios memory redis
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

from _common import VENV_BIN, child, free_port, http, machine, wait_http_ok, write_json

COUNTRIES = [
    "France", "Germany", "Spain", "Italy", "Portugal", "Norway", "Sweden", "Finland", "Poland", "Austria",
    "Greece", "Turkey", "Egypt", "Kenya", "Nigeria", "Brazil", "Argentina", "Chile", "Peru", "Mexico",
    "Canada", "Japan", "China", "India", "Thailand", "Vietnam", "Australia", "Ireland", "Iceland", "Hungary",
]  # fmt: skip
# (question, paraphrase) templates for the semantic scenario
TEMPLATES = [
    ("What is the capital of {}?", "what's the capital of {}"),
    ("What is the population of {}?", "what's the population of {}"),
    ("What currency is used in {}?", "what currency does {} use"),
]


def serve_upstream(port: int, delay_ms: float) -> None:
    """The upstream: a fixed chat completion (after ``delay_ms``), embeddings, and a call counter."""
    from aiohttp import web

    calls = {"chat": 0, "other": 0}
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A cached answer from the benchmark upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }

    async def completion(request: web.Request) -> web.Response:
        await request.read()
        calls["chat"] += 1
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        return web.json_response(body)

    async def count(request: web.Request) -> web.Response:
        return web.json_response(calls)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completion)
    app.router.add_get("/count", count)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def upstream_calls(port: int) -> int:
    status, raw = http("GET", f"http://127.0.0.1:{port}/count")
    assert status == 200
    return int(json.loads(raw)["chat"])


def gateway_yaml(port: int, upstream_port: int, scenario: str, redis_url: str, prefix: str) -> str:
    cache: dict[str, Any] = {"enabled": True, "ttl_seconds": 600}
    models: list[dict[str, Any]] = [
        {
            "name": "bench",
            "price": {"input_per_million": 2.5, "output_per_million": 10.0},
            "routing": {"retries": 0},
            "deployments": [
                {"type": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1", "model": "bench-model"}
            ],
        }
    ]
    if scenario == "redis":
        cache.update(store=redis_url, key_prefix=prefix)
    if scenario == "semantic":
        cache["semantic"] = {"enabled": True, "threshold": 0.9, "embedding_model": "minilm", "max_messages": 2}
        models.append({"name": "minilm", "deployments": [{"type": "sentence_embedding"}]})
    config = {"server": {"host": "127.0.0.1", "port": port}, "models": models, "cache": cache}
    return json.dumps(config)  # JSON is YAML


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def summary(latencies_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(latencies_ms), 3),
        "p99_ms": round(percentile(latencies_ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(latencies_ms), 3),
    }


def run_phase(conn: HTTPConnection, prompts: list[str], temperature: float) -> tuple[list[float], dict[str, int]]:
    """Send each prompt once; (latencies in ms, count per x-opsgate-cache value)."""
    latencies: list[float] = []
    kinds: dict[str, int] = {}
    for prompt in prompts:
        body = json.dumps(
            {"model": "bench", "messages": [{"role": "user", "content": prompt}], "temperature": temperature}
        )
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise RuntimeError(f"gateway answered {response.status}")
        kind = response.getheader("x-opsgate-cache") or "none"
        kinds[kind] = kinds.get(kind, 0) + 1
    return latencies, kinds


def prompts_for(scenario: str, count: int, run_id: str) -> tuple[list[str], list[str]]:
    """(miss-phase prompts, hit-phase prompts): repeats, or paraphrases for the semantic scenario."""
    if scenario != "semantic":
        prompts = [f"Benchmark question {run_id} number {i}: what is {i} squared?" for i in range(count)]
        return prompts, prompts
    pairs = [(q.format(c), p.format(c.lower())) for q, p in TEMPLATES for c in COUNTRIES][:count]
    return [q for q, _ in pairs], [p for _, p in pairs]


def run_scenario(scenario: str, args: argparse.Namespace, upstream_port: int) -> dict[str, Any]:
    port = free_port()
    prefix = f"opsgate-bench:{uuid.uuid4().hex}:"
    with tempfile.TemporaryDirectory(prefix=f"opsgate-bench-cache-{scenario}-") as home:
        config = Path(home) / "opsgate.yaml"
        config.write_text(gateway_yaml(port, upstream_port, scenario, args.redis, prefix))
        log = Path(home) / "opsgate.log"
        argv = [str(VENV_BIN / "opsgate"), "serve", "--config", str(config), "--log-level", "warning"]
        try:
            with child(argv, log=log, cwd=Path(home)) as proc:
                wait_http_ok(f"http://127.0.0.1:{port}/readyz", proc, 60, f"opsgate ({scenario})", log)
                conn = HTTPConnection("127.0.0.1", port, timeout=30)
                temperature = 0.0 if scenario == "semantic" else 0.7
                warm, _ = prompts_for("exact", 20, uuid.uuid4().hex)
                run_phase(conn, warm + warm, temperature)  # connections, code paths, first embeddings
                misses, hits = prompts_for(scenario, args.requests, uuid.uuid4().hex)
                before = upstream_calls(upstream_port)
                miss_ms, miss_kinds = run_phase(conn, misses, temperature)
                middle = upstream_calls(upstream_port)
                hit_ms, hit_kinds = run_phase(conn, hits, temperature)
                after = upstream_calls(upstream_port)
                conn.close()
        finally:
            if scenario == "redis":
                forget_redis_keys(args.redis, prefix)
    return {
        "scenario": scenario,
        "requests_per_phase": len(misses),
        "miss": {**summary(miss_ms), "answers": miss_kinds, "upstream_calls": middle - before},
        "hit": {**summary(hit_ms), "answers": hit_kinds, "upstream_calls": after - middle},
        "upstream_calls_saved": len(hits) - (after - middle),
    }


def redis_reachable(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.exceptions.RedisError:
        return False


def forget_redis_keys(url: str, prefix: str) -> None:
    """Delete this run's keys (only those under its own prefix)."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="opsgate response cache: miss vs hit (client-measured, one connection)")
    for column in ("scenario", "N", "miss p50", "miss p99", "hit p50", "hit p99", "hit answers", "calls saved"):
        table.add_column(column, justify="right" if column not in ("scenario", "hit answers") else "left")
    for r in results:
        answers = ", ".join(f"{k} {v}" for k, v in sorted(r["hit"]["answers"].items()))
        table.add_row(
            r["scenario"],
            str(r["requests_per_phase"]),
            f"{r['miss']['p50_ms']:.2f} ms",
            f"{r['miss']['p99_ms']:.2f} ms",
            f"{r['hit']['p50_ms']:.2f} ms",
            f"{r['hit']['p99_ms']:.2f} ms",
            answers,
            f"{r['upstream_calls_saved']}/{r['requests_per_phase']}",
        )
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="distinct requests per phase (default 500)")
    parser.add_argument("--upstream-ms", type=float, default=0.0, help="latency the upstream adds per call")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--scenarios", nargs="+", default=["memory", "redis", "semantic"])
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream, args.upstream_ms)
        return
    upstream_port = free_port()
    argv = [sys.executable, __file__, "--serve-upstream", str(upstream_port), "--upstream-ms", str(args.upstream_ms)]
    results = []
    started = time.monotonic()
    with child(argv) as upstream:
        wait_http_ok(f"http://127.0.0.1:{upstream_port}/healthz", upstream, 20, "upstream")
        for scenario in args.scenarios:
            if scenario == "redis" and not redis_reachable(args.redis):
                print(f"skipping redis: nothing answers at {args.redis}")
                continue
            results.append(run_scenario(scenario, args, upstream_port))
    print_table(results)
    path = write_json(
        "cache.json",
        {
            "machine": machine(),
            "settings": {"requests": args.requests, "upstream_ms": args.upstream_ms, "connections": 1},
            "wall_seconds": round(time.monotonic() - started, 1),
            "scenarios": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
