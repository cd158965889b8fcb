"""Gateway replicas as real ``opsgate serve`` processes, with the settings a container passes in its environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


class Replica:
    """One ``opsgate serve`` process on 127.0.0.1:``port``; settings through OPSGATE_* variables."""

    def __init__(self, config: Path, port: int, log: Path, **env: str) -> None:
        self.config = config
        self.port = port
        self.log = log
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: bool = True, timeout: float = 60.0) -> Replica:
        """Start the process; wait for /readyz 200 (or /healthz with ``ready`` False)."""
        env = {
            **os.environ,
            "OPSGATE_CONFIG": str(self.config),
            "OPSGATE_HOST": "127.0.0.1",
            "OPSGATE_PORT": str(self.port),
            "OPSGATE_LOG_LEVEL": "warning",
            **self.env,
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "opsgate.cli.main", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        path = "/readyz" if ready else "/healthz"
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"replica on {self.port} did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process."""
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the process to exit; its return code."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """SIGTERM if still running, then wait (SIGKILL if it will not go)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
