"""What hostile clients cost everyone else: a normal client's latency beside an attack, the admin API
beside a flood of made-up feedback ids, and whether every acknowledged request was stored.

What it does, per tree (this one, and with ``--baseline-src`` an older ``src/`` side by side in the
same run, on the same machine):
  1. starts an instant OpenAI-compatible upstream (aiohttp, in this process) and ``opsgate serve``
     (one worker, auth on, SQLite request log, a breaker that opens after 2 failures) in front of it;
  2. a normal client sends ``--requests`` chats one after another, alone, then again while
     ``--attackers`` clients loop over hostile bodies (NaN, integers past 64 bits, 1 MB prompts,
     100,000-deep JSON, NUL, a malformed json_schema, a lying Content-Length);
  3. an admin GET is timed alone and during ``--feedback`` concurrent posts of made-up request ids;
  4. waits for the writer, then counts the normal client's acknowledged requests missing from the log
     and reads the breaker state;
  5. prints a Markdown table and writes bench/results/hostile.json.

    .venv/bin/python bench/hostile.py
    git worktree add /tmp/oldtree 66f18b5
    .venv/bin/python bench/hostile.py --baseline-src /tmp/oldtree/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from _common import ROOT, free_port, machine, write_json

ADMIN_KEY = "og_benchkey0_hostile-bench-admin-secret"
CHAT = {"object": "chat.completion", "id": "x", "created": 0, "model": "m"}
HOSTILE: list[bytes] = [
    b'{"model": "up", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"model": "up", "messages": [{"role": "user", "content": "hi"}], "seed": 18446744073709551616}',
    b'{"model": "up", "messages": [{"role": "user", "content": "' + b"q" * 1_000_000 + b'"}]}',
    b"[" * 100_000,
    b'{"model": "up", "messages": [{"role": "user", "content": "a\\u0000b"}], "user": "\\u0000"}',
    b'{"model": "up", "messages": [{"role": "user", "content": "hi"}], "response_format": '
    b'{"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#"}}}}',
]


class InstantUpstream:
    """An OpenAI-compatible chat endpoint that answers at once, in a thread of this process."""

    def __init__(self) -> None:
        self.port = free_port()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    async def _chat(self, request: web.Request) -> web.Response:
        await request.read()
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        choice = {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        return web.json_response({**CHAT, "choices": [choice], "usage": usage})

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        loop.run_forever()


def serve(src: Path, upstream: int, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``opsgate serve`` from ``src`` with auth on and its own SQLite log; returns it once ready."""
    config = work / "gateway.yaml"
    deployment = {
        "type": "openai",
        "base_url": f"http://127.0.0.1:{upstream}/v1",
        "model": "m",
        "breaker": {"enabled": True, "consecutive_failures": 2, "open_seconds": 60},
    }
    config.write_text(
        json.dumps(
            {
                "auth": {"enabled": True, "admin_key": ADMIN_KEY},
                "record": {"store": f"sqlite:///{work}/requests.db", "journal_dir": str(work / "journal")},
                "models": [{"name": "up", "routing": {"retries": 1}, "deployments": [deployment]}],
            }
        )
    )
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "opsgate.cli.main", "serve", "--config", str(config), "--port", str(port)]
    with open(work / "gateway.log", "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"gateway from {src} did not start")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000 if len(values) > 1 else 0.0


async def normal_client(client: httpx.AsyncClient, requests: int) -> tuple[list[float], list[str], int]:
    """Sequential chats; their latencies, acknowledged ids and non-200 count."""
    times, ids, failed = [], [], 0
    for i in range(requests):
        started = time.perf_counter()
        response = await client.post(
            "/v1/chat/completions", json={"model": "up", "messages": [{"role": "user", "content": f"normal {i}"}]}
        )
        times.append(time.perf_counter() - started)
        if response.status_code == 200:
            ids.append(response.headers["x-request-id"])
        else:
            failed += 1
    return times, ids, failed


async def attacker(client: httpx.AsyncClient, stop: asyncio.Event, statuses: dict[int, int], offset: int) -> None:
    i = offset
    while not stop.is_set():
        body = HOSTILE[i % len(HOSTILE)]
        i += 1
        try:
            response = await client.post(
                "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        except httpx.HTTPError:
            statuses[-1] = statuses.get(-1, 0) + 1


async def admin_latency(client: httpx.AsyncClient, feedback: int) -> tuple[float, float]:
    """An admin GET's latency alone, then during ``feedback`` concurrent made-up-id feedback posts."""

    async def timed() -> float:
        started = time.perf_counter()
        await client.get("/admin/requests", params={"limit": 5})
        return time.perf_counter() - started

    alone = await timed()

    async def post(i: int) -> None:
        # Shaped like the gateway's own ids (16 hex + an 8-hex counter), so the gateway must look them up.
        made_up = os.urandom(8).hex() + f"{i:08x}"
        await client.post("/v1/feedback", json={"request_id": made_up, "score": 1})

    posts = [asyncio.ensure_future(post(i)) for i in range(feedback)]
    await asyncio.sleep(0.05)
    during = await timed()
    await asyncio.gather(*posts, return_exceptions=True)
    return alone, during


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    limits = httpx.Limits(max_connections=args.attackers + args.feedback + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=180, limits=limits) as client:
        await normal_client(client, 20)  # warm
        quiet, quiet_ids, quiet_failed = await normal_client(client, args.requests)
        stop, statuses = asyncio.Event(), {}
        attack = [asyncio.ensure_future(attacker(client, stop, statuses, i)) for i in range(args.attackers)]
        await asyncio.sleep(0.5)
        loud, loud_ids, loud_failed = await normal_client(client, args.requests)
        stop.set()
        await asyncio.gather(*attack)
        admin_alone, admin_flood = await admin_latency(client, args.feedback)
        ids = quiet_ids + loud_ids
        # The attack's 1 MB prompts are stored too (twice each): the writer has a backlog to work off.
        catch_up_started = time.monotonic()
        deadline = catch_up_started + args.catch_up_limit
        missing = ids
        while missing and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            missing = [i for i in missing if (await client.get(f"/admin/requests/{i}")).status_code != 200]
        catch_up = time.monotonic() - catch_up_started
        deployments = (await client.get("/readyz")).json().get("deployments", {})
        breaker = {label: (state.get("breaker") or {}).get("state") for label, state in deployments.items()}
    return {
        "normal_alone_p50_ms": pct(quiet, 50),
        "normal_alone_p99_ms": pct(quiet, 99),
        "normal_under_attack_p50_ms": pct(loud, 50),
        "normal_under_attack_p99_ms": pct(loud, 99),
        "normal_failed_under_attack": loud_failed + quiet_failed,
        "hostile_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "admin_get_alone_ms": admin_alone * 1000,
        "admin_get_during_feedback_flood_ms": admin_flood * 1000,
        "acknowledged": len(ids),
        "acknowledged_not_stored": len(missing),
        "seconds_until_all_stored": catch_up,
        "breakers_after": breaker,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="normal chats per phase")
    parser.add_argument("--attackers", type=int, default=16, help="concurrent hostile clients")
    parser.add_argument("--feedback", type=int, default=80, help="concurrent made-up feedback posts")
    parser.add_argument("--catch-up-limit", type=float, default=600, help="seconds to wait for the writer")
    parser.add_argument("--baseline-src", type=Path, help="an older tree's src/ to run side by side")
    args = parser.parse_args()
    upstream = InstantUpstream()
    trees = {"this tree": ROOT / "src"}
    if args.baseline_src:
        trees["baseline"] = args.baseline_src
    results: dict[str, Any] = {}
    for name, src in trees.items():
        with tempfile.TemporaryDirectory(prefix="hostile-bench-") as work:
            process, url = serve(src, upstream.port, Path(work))
            try:
                results[name] = asyncio.run(measure(url, args))
            finally:
                stopping = time.monotonic()
                process.terminate()
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                if name in results:
                    results[name]["sigterm_to_exit_s"] = time.monotonic() - stopping
    rows = list(next(iter(results.values())))
    print("| | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for row in rows:
        cells = [f"{r[row]:.1f}" if isinstance(r[row], float) else json.dumps(r[row]) for r in results.values()]
        print(f"| {row} | " + " | ".join(cells) + " |")
    write_json("hostile.json", {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
