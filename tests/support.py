"""Test helpers: real servers on loopback, run in background threads with their own event loops."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from opsgate.domain.config import GatewayConfig, parse_config
from opsgate.pipeline.record import MemorySink
from opsgate.server.app import create_app

# Each test process (pytest-xdist's gw0, gw1, ...) hands out ports from its own block, below the kernel's
# ephemeral range (32768+): a port one process picked and has not bound yet cannot be given to another
# process, nor to an outgoing connection (port 0 could: a request then reached another test's gateway).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
_PORT_BLOCK = 20_000 + (int(_WORKER) % 8 if _WORKER.isdigit() else 0) * 1_500
_next_port = itertools.count(random.randrange(1_500))


def free_port() -> int:
    """A port nothing listens on right now (from this test process's own block)."""
    for _ in range(1_500):
        port = _PORT_BLOCK + next(_next_port) % 1_500
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORT_BLOCK}-{_PORT_BLOCK + 1_499}")


class ServerThread:
    """Runs an ASGI app under uvicorn on 127.0.0.1 in a thread; ``stop()`` shuts it down cleanly."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                loop="asyncio",
                lifespan="on",
                timeout_graceful_shutdown=5,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str | None = None, timeout: float = 60.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        if ready_path:
            while httpx.get(self.url + ready_path).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ready_path} never became ready")
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def isolated(config: GatewayConfig, directory: str | None = None) -> GatewayConfig:
    """``config`` with its request log in a temporary directory (unless it names a PostgreSQL store)."""
    if config.record.store is not None and config.record.store.startswith("postgres"):
        directory = directory or tempfile.mkdtemp(prefix="opsgate-test-")
        record = config.record.model_copy(update={"journal_dir": f"{directory}/journal"})
        return config.model_copy(update={"record": record})
    directory = directory or tempfile.mkdtemp(prefix="opsgate-test-")
    record = config.record.model_copy(
        update={"store": f"sqlite:///{directory}/requests.db", "journal_dir": f"{directory}/journal"}
    )
    return config.model_copy(update={"record": record})


class Gateway:
    """A gateway under test: its server, its config and the records it wrote."""

    def __init__(self, config: GatewayConfig, keep_record_config: bool = False) -> None:
        self.sink = MemorySink(10_000)
        self.config = config if keep_record_config else isolated(config)
        self.app = create_app(self.config, sink=self.sink)
        self.server = ServerThread(self.app)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return self.server.url + "/v1"

    def records_for(self, request_id: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Records with this id, or sent with it as ``X-Request-Id`` (waiting briefly: streams are recorded
        when they end)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in list(self.sink.records) if request_id in (r["id"], r.get("client_request_id"))]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


def start_gateway(config_data: dict[str, Any], ready: bool = True) -> Gateway:
    gateway = Gateway(parse_config(config_data))
    gateway.server.start("/readyz" if ready else None)
    return gateway


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def gather_all(*coros: Any) -> list[Any]:
    return list(await asyncio.gather(*coros))


@contextmanager
def serve_process(
    config: Path, log: Path | None = None, args: Sequence[str] = (), timeout: float = 30.0, cwd: Path | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``opsgate serve --config`` (plus ``args``) as a real process; yields it and its URL once /healthz answers.

    Stopped with SIGTERM at the end unless the test already killed it.
    """
    port = free_port()
    out = log.open("wb") if log else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opsgate.cli.main",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--log-level",
                "warning",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # its own process group: a gateway that will not stop is killed with its workers
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, log.read_text() if log else "did not start"
            time.sleep(0.05)
        yield process, url
    finally:
        # Also when it never answered in time (a loaded machine): left running, a gateway keeps its
        # journal segment live, and its record writer process retries its store for the rest of the run.
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its workers too: alive, they keep the journal live
                process.wait(10)
                raise
