"""The HTTP protocol's cost per request, this tree's beside an earlier one's (7ee9d11: refusals recorded).

    nice -n 10 .venv/bin/python bench/protocol_rejects.py parser              # vs 7ee9d11^, in one process
    nice -n 10 .venv/bin/python bench/protocol_rejects.py serve [--rounds 8]  # vs 7ee9d11^, two gateways
    git archive 7ee9d11^ src | tar -x -C /tmp/base
    nice -n 10 .venv/bin/python bench/protocol_rejects.py serve --base /tmp/base/src

``parser``: ``data_received`` + llhttp + the wrapped callbacks for one 4-header GET, the ASGI task start
stubbed out, both trees' ``server.http_limits`` imported side by side (``bench/_base_tree.py``); per round
20,000 requests on each side, the sides alternating which goes first; thread CPU (``time.thread_time``).

``serve``: two gateway processes with the same config (one upstream alias, SQLite request log, auth off,
metrics on, logging at ``info`` as ``opsgate serve`` defaults to, the server's output to a file) that differ
only in the protocol class: this tree's app, and either this tree's ``http_limits.py`` or the earlier tree's
file loaded on its own (at 7ee9d11^ it imports only uvicorn and the standard library). This process drives
them over loopback in alternating rounds; a server's CPU is the sum of its threads' on-CPU ns
(``/proc/PID/task/*/schedstat``) around each round. Workloads: GET /healthz keep-alive, a recorded 404 chat,
a malformed request line and CL+TE (new connection each: the refusal closes it). After the rounds: rows in
each request log and lines in each server log. The machine is shared: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _base_tree import base_src, import_tree  # noqa: E402
from _common import free_port, machine, write_json  # noqa: E402

CONFIG = """
models:
  - name: up
    deployments:
      - {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}
record: {store: 'sqlite:///%(dir)s/records.db', journal_dir: '%(dir)s/journal'}
"""
GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = b'{"model":"nope","messages":[{"role":"user","content":"hi"}]}'
CHAT_404 = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
GARBAGE = b"GARBAGE\r\n\r\n"
CL_TE = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
)


# --- parser: both protocols in this process ---------------------------------------------------------------


class _Transport:
    """The part of an asyncio transport the protocol touches; writes go nowhere."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 1), "peername": ("127.0.0.1", 2)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        return None

    def close(self) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def set_protocol(self, protocol: Any) -> None:
        return None


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    return None


def _protocol(limits: ModuleType, loop: asyncio.AbstractEventLoop) -> Any:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    config = Config(_no_app, http=limits.http_protocol(65536, 15.0))
    config.load()
    protocol = limits.HeadLimitedHttpToolsProtocol(
        config, ServerState(), {}, _loop=loop, max_head_bytes=65536, head_timeout=15.0
    )
    protocol._start_asgi_task = lambda cycle, app: None  # the parser's part only
    protocol.connection_made(_Transport())
    return protocol


def _parse_us(protocol: Any, count: int) -> float:
    started = time.thread_time()
    for _ in range(count):
        protocol.data_received(GET)
        protocol.cycle.response_complete = True  # as if answered: the next request is parsed at once
    return (time.thread_time() - started) / count * 1e6


async def parser_rounds(sides: dict[str, ModuleType], rounds: int, count: int, progress: Progress) -> dict[str, Any]:
    """Median / min us per request of each side's parser path, and the ratio of medians."""
    loop = asyncio.get_running_loop()
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for limits in sides.values():
        _parse_us(_protocol(limits, loop), 1000)  # warm-up
    task = progress.add_task("parser rounds", total=rounds)
    for index in range(rounds):
        for name in list(sides) if index % 2 else list(reversed(sides)):
            samples[name].append(_parse_us(_protocol(sides[name], loop), count))
        progress.advance(task)
    row: dict[str, Any] = {
        name: {"median_us": round(statistics.median(v), 3), "min_us": round(min(v), 3)} for name, v in samples.items()
    }
    row["new/base"] = round(row["new"]["median_us"] / row["base"]["median_us"], 3)
    return row


# --- serve: two gateway processes --------------------------------------------------------------------------


def child(protocol_file: str, port: int, directory: Path) -> None:
    """Run a gateway on ``port`` with this tree's app and the protocol of ``protocol_file`` ('new': this tree's)."""
    import uvicorn

    from opsgate.domain.config import load_config
    from opsgate.server.app import create_app
    from opsgate.server.logs import configure_logging

    if protocol_file == "new":
        from opsgate.server import http_limits as limits
    else:
        spec = importlib.util.spec_from_file_location("http_limits_base", protocol_file)
        assert spec and spec.loader
        limits = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(limits)
    path = directory / "config.yaml"
    path.write_text(CONFIG % {"dir": directory})
    configure_logging("info")  # serve's default level
    app = create_app(load_config(str(path)))
    http = limits.http_protocol(64 * 1024, 15.0)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http=http, log_level="info", access_log=False)


def _cpu_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    return total


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a full answer")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).lower()
    length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(buf) < end + length:
        buf += sock.recv(65536)
    del buf[: end + length]
    return int(head.split(b" ", 2)[1])


def keepalive(port: int, request: bytes, count: int, expect: int) -> None:
    """``count`` requests on one connection, each answered ``expect``."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        buf = bytearray()
        for _ in range(count):
            sock.sendall(request)
            status = _read_response(sock, buf)
            if status != expect:
                raise RuntimeError(f"expected {expect}, got {status}")


def refusals(port: int, request: bytes, count: int) -> None:
    """``count`` connections, each sending ``request`` and answered 400."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request)
            status = _read_response(sock, bytearray())
            if status != 400:
                raise RuntimeError(f"expected 400, got {status}")


def _rows(directory: Path) -> int:
    with sqlite3.connect(f"file:{directory}/records.db?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


def serve_rounds(base_file: Path, rounds: int, progress: Progress) -> dict[str, Any]:
    """Server CPU us per request of each gateway per workload, then rows and log lines."""
    servers: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    logs = []
    try:
        for name, protocol in (("base", str(base_file)), ("new", "new")):
            directory = Path(tempfile.mkdtemp(prefix=f"opsgate-bench-{name}-"))
            port = free_port()
            log = open(directory / "serve.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            argv = [sys.executable, __file__, "_child", protocol, str(port), str(directory)]
            servers[name] = (subprocess.Popen(argv, stdout=log, stderr=log), port, directory)
        for name, (proc, port, _) in servers.items():
            deadline = time.monotonic() + 120
            while True:
                try:
                    keepalive(port, HEALTHZ, 1, 200)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the {name} gateway did not start") from None
                    time.sleep(0.2)
        workloads: list[tuple[str, Callable[[int], None], int]] = [
            ("GET /healthz, keep-alive", lambda p: keepalive(p, HEALTHZ, 4000, 200), 4000),
            ("POST /v1/chat/completions -> 404, recorded", lambda p: keepalive(p, CHAT_404, 2000, 404), 2000),
            ("malformed request line, new connection each", lambda p: refusals(p, GARBAGE, 1000), 1000),
            ("CL+TE, new connection each", lambda p: refusals(p, CL_TE, 1000), 1000),
        ]
        out: dict[str, Any] = {}
        task = progress.add_task("serve rounds", total=rounds * len(workloads))
        for label, run, count in workloads:
            for _, port, _ in servers.values():
                run(port)  # warm-up
            samples: dict[str, list[float]] = {name: [] for name in servers}
            for index in range(rounds):
                for name in ("base", "new") if index % 2 == 0 else ("new", "base"):
                    proc, port, _ = servers[name]
                    before = _cpu_ns(proc.pid)
                    run(port)
                    samples[name].append((_cpu_ns(proc.pid) - before) / count / 1000)
                progress.advance(task)
            row: dict[str, Any] = {
                name: {"median_us": round(statistics.median(v), 1), "min_us": round(min(v), 1)}
                for name, v in samples.items()
            }
            row["new/base"] = round(row["new"]["median_us"] / row["base"]["median_us"], 3)
            out[label] = row
            progress.console.print(f"{label}: {json.dumps(row)}")
        time.sleep(3)  # the record writer's flush
        out["after the run"] = {
            name: {
                "request_log_rows": _rows(directory),
                "server_log_lines": len((directory / "serve.log").read_bytes().splitlines()),
            }
            for name, (_, _, directory) in servers.items()
        }
        return out
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(30)
        for log in logs:
            log.close()


def table(result: dict[str, Any], unit: str) -> str:
    """A Markdown table: median (min) per side and the ratio."""
    lines = [f"| workload | base ({result['base']}) {unit} | new {unit} | new/base |", "|---|---|---|---|"]
    for label, row in result["cases"].items():
        if label == "after the run":
            continue
        base, new = row["base"], row["new"]
        lines.append(
            f"| {label} | {base['median_us']} ({base['min_us']}) | {new['median_us']} ({new['min_us']}) "
            f"| {row['new/base']} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "_child":  # a gateway started by ``serve``
        child(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["parser", "serve"])
    parser.add_argument("--base", type=Path, help="src/ of the tree to compare with (unpacked by git archive)")
    parser.add_argument("--base-ref", help="a commit to unpack and compare with when --base is not given")
    parser.add_argument("--new", type=Path, default=ROOT / "src", help="src/ of the tree measured (parser only)")
    parser.add_argument("--rounds", type=int, help="rounds (parser: 20, serve: 8)")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per parser round")
    parser.add_argument("--output", help="file name under bench/results/ (protocol_rejects-MODE.json)")
    args = parser.parse_args()
    src, label = base_src(args.base, args.base_ref, "7ee9d11^")
    result: dict[str, Any] = {"machine": machine(), "base": label, "mode": args.mode}
    with Progress() as progress:
        if args.mode == "parser":
            sides = {
                "base": import_tree(src, ["server.http_limits"])["server.http_limits"],
                "new": import_tree(args.new, ["server.http_limits"])["server.http_limits"],
            }
            gc.collect()
            gc.freeze()
            rounds = args.rounds or 20
            cases = {"one 4-header GET": asyncio.run(parser_rounds(sides, rounds, args.requests, progress))}
        else:
            rounds = args.rounds or 8
            cases = serve_rounds(src / "opsgate" / "server" / "http_limits.py", rounds, progress)
    result.update({"rounds": rounds, "load_1m_after": round(os.getloadavg()[0], 1), "cases": cases})
    path = write_json(args.output or f"protocol_rejects-{args.mode}.json", result)
    print(table(result, "us/request" if args.mode == "parser" else "server CPU us/request"))
    if "after the run" in cases:
        print(json.dumps(cases["after the run"]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
