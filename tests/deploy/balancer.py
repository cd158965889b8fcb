"""HAProxy (Debian's package) in front of gateway replicas on loopback, checking /readyz as Kubernetes would."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.support import free_port

CONFIG = """
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    # A refused connection (a replica between its drain and its restart) is retried on another one.
    retries 3
    option redispatch 1
    retry-on conn-failure
    # No idle server connections to race with a replica closing them.
    option http-server-close
frontend gateway
    bind 127.0.0.1:{port}
    default_backend replicas
frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # Out of rotation after 3 failed checks (about 1 s): one slow check on a busy machine is no reason,
    # and the replicas drain for longer than that.
    timeout check 2s
    default-server inter 300ms fall 3 rise 2
{servers}
"""


class Balancer:
    """``haproxy -f`` on a generated config; ``servers`` are name -> port on 127.0.0.1."""

    def __init__(self, directory: Path, servers: dict[str, int]) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            raise FileNotFoundError("haproxy")
        self.binary = binary
        self.port = free_port()
        self.stats_port = free_port()
        self.config = directory / "haproxy.cfg"
        lines = "\n".join(f"    server {name} 127.0.0.1:{port} check" for name, port in servers.items())
        self.config.write_text(CONFIG.format(port=self.port, stats_port=self.stats_port, servers=lines))
        self.log = directory / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Balancer:
        check = subprocess.run([self.binary, "-c", "-f", str(self.config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([self.binary, "-db", "-f", str(self.config)], stdout=out, stderr=out)
        return self

    def states(self) -> dict[str, str]:
        """Each server's status as HAProxy sees it (UP, DOWN, ...)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text
        except httpx.TransportError:
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "replicas" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_state(self, server: str, status: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.states().get(server) != status:
            assert time.monotonic() < deadline, f"{server} never {status}: {self.states()}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
