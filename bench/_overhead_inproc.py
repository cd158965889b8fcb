"""The gateway's CPU per request without uvicorn: ``create_app()`` driven over ASGI in this process.

Run (``PYTHONPATH=/tmp/base/src`` to measure another checkout with this venv):

    .venv/bin/python bench/_overhead_inproc.py --requests 4000 --concurrency 8 [--log] [--auth] [--cprofile OUT.prof]
    valgrind --tool=callgrind .venv/bin/python bench/_overhead_inproc.py --requests 400   # and 1600:
        # instructions per request = (total at 1600 - total at 400) / 1200, start-up cancels out
    OPSGATE_BENCH_CALLGRIND=1 valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
        .venv/bin/python bench/_overhead_inproc.py --requests 400 --log --auth
        # only the measured requests are counted (callgrind_control switches it on and off), per thread

An nginx on a free port (pinned to the last CPU) answers as the upstream, as in bench/overhead.py.
Prints the main thread's CPU microseconds per request (``time.thread_time``; with ``--log`` the
record writer runs in its own thread and is not counted). Steadier than req/s on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from _overhead_targets import create_key, nginx_upstream
from overhead import REQUEST_BODY, plan_cpus

BODY = json.dumps(REQUEST_BODY).encode()
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/v1/chat/completions",
    "raw_path": b"/v1/chat/completions",
    "query_string": b"",
    "root_path": "",
    "headers": [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
    "client": ("127.0.0.1", 1234),
    "server": ("127.0.0.1", 80),
}


async def one(app: Any, scope: dict[str, Any]) -> None:
    """One chat completion through the app; it must answer 200."""
    sent = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)  # no disconnect: the app cancels this watcher when done
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app({**scope, "state": {}}, receive, send)
    if status != [200]:
        raise RuntimeError(f"expected 200, got {status}")


async def lifespan(app: Any) -> tuple[asyncio.Queue[dict[str, Any]], asyncio.Future[Any]]:
    """Run the app's startup; returns the queue to send shutdown on and the lifespan task."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.startup.failed":
            raise RuntimeError(message)

    task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send))
    await started.wait()
    return queue, task


def _callgrind(state: str) -> None:
    """Under ``valgrind --tool=callgrind --instr-atstart=no``, count only the measured requests."""
    if os.environ.get("OPSGATE_BENCH_CALLGRIND"):
        subprocess.run(["callgrind_control", "--instr=" + state, str(os.getpid())], check=True, capture_output=True)


async def drive(app: Any, requests: int, concurrency: int, profile: Path | None, key: str | None = None) -> float:
    """Warm up, then ``requests`` requests from ``concurrency`` clients; main-thread CPU us per request."""
    queue, task = await lifespan(app)
    scope = SCOPE
    if key is not None:
        scope = {**SCOPE, "headers": [*SCOPE["headers"], (b"authorization", f"Bearer {key}".encode())]}

    async def client(n: int) -> None:
        for _ in range(n):
            await one(app, scope)

    await asyncio.gather(*(client(200 // concurrency) for _ in range(concurrency)))
    profiler = cProfile.Profile() if profile else None
    _callgrind("on")
    started = time.thread_time()
    if profiler:
        profiler.enable()
    await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
    if profiler and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    used = time.thread_time() - started
    _callgrind("off")
    await queue.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 30)
    return used / (requests // concurrency * concurrency) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--log", action="store_true", help="the request log on as shipped (default: store none)")
    parser.add_argument("--auth", action="store_true", help="auth on, requests with a service key (needs --log)")
    parser.add_argument("--bare", action="store_true", help="drive bench/_bare_proxy.py's app instead (the floor)")
    parser.add_argument("--cprofile", type=Path, help="write a cProfile of the measured requests here")
    args = parser.parse_args()
    if args.auth and not args.log:
        parser.error("--auth needs --log (keys live in the request log's store)")
    _, load_cpus = plan_cpus(True)
    with tempfile.TemporaryDirectory(prefix="opsgate-inproc-") as tmp_name:
        tmp = Path(tmp_name)
        with nginx_upstream(tmp, load_cpus) as (upstream, _):
            config = tmp / "opsgate.yaml"
            config.write_text(
                "models:\n  - name: fake\n    deployments:\n      - type: openai\n"
                f"        base_url: {upstream}\n        model: fake-model\n        api_key: sk-test\n"
                + ("" if args.log else "record: {store: none}\n")
                + ("auth: {enabled: true, admin_key: 'bench-admin-key-0123456789'}\n" if args.auth else "")
            )
            if args.bare:
                import _bare_proxy

                _bare_proxy.UPSTREAM = f"{upstream}/chat/completions"
                cpu = uvloop.run(drive(_bare_proxy.app, args.requests, args.concurrency, args.cprofile))
                print(f"main-thread CPU per request: {cpu:.1f} us ({args.requests} requests, bare proxy)")
                return
            key = create_key(config, tmp) if args.auth else None
            os.chdir(tmp)  # the default store and journal are relative to the working directory
            from opsgate.domain.config import load_config
            from opsgate.server.app import create_app

            app = create_app(load_config(config))
            cpu = uvloop.run(drive(app, args.requests, args.concurrency, args.cprofile, key))
    print(f"main-thread CPU per request: {cpu:.1f} us ({args.requests} requests, {args.concurrency} clients)")


if __name__ == "__main__":
    main()
