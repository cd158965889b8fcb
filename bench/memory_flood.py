"""The gateway's resident memory under a flood of 2 MB prompts, this tree beside an older one.

Both gateways run at the same time (same machine load), each with its own SQLite request log, behind
one instant upstream (aiohttp, in this process). Per round, ``--conns`` clients per gateway send chat
completions with a ``--size``-byte user message for ``--flood`` seconds, then all rest ``--idle``
seconds. The RSS of each gateway's process tree (gateway + any writer process) is sampled every
0.5 s; at the end each is given ``--drain`` seconds for its writer to store the backlog.

    .venv/bin/python bench/memory_flood.py                       # base: 2aca9cd (before c3ef913)
    .venv/bin/python bench/memory_flood.py --base-ref HEAD~3 --rounds 3 --flood 30
    .venv/bin/python bench/memory_flood.py --guard               # with the default guard policy on

Prints the RSS over time side by side and a summary; writes bench/results/memory_flood[-process][-guard].json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from _base_tree import base_src
from _common import ROOT, free_port, machine, process_tree, write_json
from hostile import InstantUpstream


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and its descendants, in MiB."""
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Gateway:
    """``opsgate serve`` from ``src``: SQLite log in ``work``, one model in front of ``upstream``."""

    def __init__(self, name: str, src: Path, upstream: int, work: Path, guard: bool, writer: str) -> None:
        self.name = name
        deployment = {"type": "openai", "base_url": f"http://127.0.0.1:{upstream}/v1", "model": "m"}
        record = {"store": f"sqlite:///{work}/requests.db", "journal_dir": str(work / "journal"), "writer": writer}
        config = {
            "record": record,
            "models": [{"name": "up", "deployments": [deployment]}],
            "guard": {"enabled": guard},
        }
        (work / "gateway.yaml").write_text(json.dumps(config))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "opsgate.cli.main", "serve", "--config", str(work / "gateway.yaml")]
        self.log = open(work / "gateway.log", "wb")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            [*command, "--port", str(port)],
            env={**os.environ, "PYTHONPATH": str(src)},
            cwd=work,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.samples: list[tuple[float, float, str]] = []
        self.statuses: dict[str, int] = {}

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready")

    def record(self) -> dict[str, Any]:
        ready = httpx.get(self.url + "/readyz", timeout=60).json()
        record = ready.get("record") or ready.get("checks", {}).get("record") or {}
        return {key: record.get(key) for key in ("written", "pending_bytes", "segments")}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


async def flood(gateways: list[Gateway], conns: int, seconds: float, size: int) -> None:
    prompt = "lorem ipsum dolor sit amet " * (size // 27)
    body = json.dumps({"model": "up", "messages": [{"role": "user", "content": prompt}]}).encode()
    stop = time.monotonic() + seconds

    async def one(client: httpx.AsyncClient, gateway: Gateway) -> None:
        while time.monotonic() < stop:
            try:
                response = await client.post(
                    "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
                )
                key = str(response.status_code)
            except httpx.HTTPError as error:
                key = type(error).__name__
            gateway.statuses[key] = gateway.statuses.get(key, 0) + 1

    clients = [
        httpx.AsyncClient(base_url=g.url, timeout=120, limits=httpx.Limits(max_connections=conns)) for g in gateways
    ]
    try:
        await asyncio.gather(*(one(c, g) for c, g in zip(clients, gateways, strict=True) for _ in range(conns)))
    finally:
        for client in clients:
            await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="an older tree's src/ (default: --base-ref unpacked)")
    parser.add_argument("--base-ref", default="2aca9cd", help="commit to compare with (default: before c3ef913)")
    parser.add_argument("--conns", type=int, default=4, help="concurrent clients per gateway")
    parser.add_argument("--size", type=int, default=2_000_000, help="user message bytes")
    parser.add_argument("--flood", type=float, default=30.0, help="seconds of flood per round")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds of rest after each round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--drain", type=float, default=60.0, help="seconds the writers get at the end")
    parser.add_argument("--guard", action="store_true", help="guard on (the default policy)")
    parser.add_argument("--writer", choices=("thread", "process"), default="thread")
    args = parser.parse_args()
    base, base_label = base_src(args.base, args.base_ref, "2aca9cd")
    trees = {f"base {base_label}": base, "this tree": ROOT / "src"}
    upstream = InstantUpstream()
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        gateways = []
        for name, src in trees.items():
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memory-flood-")))
            gateway = Gateway(name, src, upstream.port, work, args.guard, args.writer)
            stack.callback(gateway.stop)
            gateways.append(gateway)
        for gateway in gateways:
            gateway.wait_ready()
        phase = ["start"]
        done = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not done.is_set():
                now = time.monotonic() - started
                for gateway in gateways:
                    gateway.samples.append((now, rss_mb(gateway.process.pid), phase[0]))
                done.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(2)
        summary: dict[str, dict[str, Any]] = {g.name: {"rss_start_mb": rss_mb(g.process.pid)} for g in gateways}
        for round_ in range(args.rounds):
            phase[0] = f"flood {round_ + 1}"
            asyncio.run(flood(gateways, args.conns, args.flood, args.size))
            for gateway in gateways:
                peak = max(m for _, m, p in gateway.samples if p == phase[0])
                summary[gateway.name][f"rss_peak_flood_{round_ + 1}_mb"] = peak
            phase[0] = f"idle {round_ + 1}"
            time.sleep(args.idle)
            for gateway in gateways:
                summary[gateway.name][f"rss_after_idle_{round_ + 1}_mb"] = rss_mb(gateway.process.pid)
                summary[gateway.name][f"record_after_idle_{round_ + 1}"] = gateway.record()
        phase[0] = "drain"
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and any(g.record().get("pending_bytes") for g in gateways):
            time.sleep(2)
        for gateway in gateways:
            summary[gateway.name]["rss_end_mb"] = rss_mb(gateway.process.pid)
            summary[gateway.name]["rss_max_mb"] = max(m for _, m, _ in gateway.samples)
            summary[gateway.name]["record_end"] = gateway.record()
            summary[gateway.name]["statuses"] = dict(gateway.statuses)
        done.set()
        sampler.join()
        for gateway in gateways:
            results[gateway.name] = {**summary[gateway.name], "samples": gateway.samples}
    names = list(results)
    print(f"| t (s) | phase | {' | '.join(f'{n} RSS (MiB)' for n in names)} |")
    print("|---|---|" + "---|" * len(names))
    first = results[names[0]]["samples"]
    step = max(1, len(first) // 30)
    for i in range(0, len(first), step):
        t, _, phase_name = first[i]
        cells = [f"{results[n]['samples'][i][1]:.0f}" if i < len(results[n]["samples"]) else "" for n in names]
        print(f"| {t:.0f} | {phase_name} | {' | '.join(cells)} |")
    print()
    print(f"| | {' | '.join(names)} |")
    print("|---|" + "---|" * len(names))
    for key in summary[names[0]]:
        cells = []
        for n in names:
            value = summary[n][key]
            cells.append(f"{value:.0f}" if isinstance(value, float) else json.dumps(value))
        print(f"| {key} | {' | '.join(cells)} |")
    arguments = {k: str(v) for k, v in vars(args).items()}
    name = "memory_flood" + ("-process" if args.writer == "process" else "") + ("-guard" if args.guard else "")
    write_json(f"{name}.json", {"machine": machine(), "args": arguments, **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
