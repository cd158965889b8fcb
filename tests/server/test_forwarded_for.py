"""``server.forwarded_allow_ips``: which proxies may say who the client is, on a real ``opsgate serve``.

The dashboard's failed-login throttle counts per client address. Behind a reverse proxy every client
arrives from the proxy's address, so unless the proxy is trusted to name the client (X-Forwarded-For),
one client's wrong keys lock every client out of the login page. The setting is handed to uvicorn,
which rewrites the client address only for the listed peers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from opsgate.domain.config import ConfigError, parse_config
from tests.fake_upstream import FakeUpstream
from tests.support import free_port

ADMIN_KEY = "og_adminkey0_forwarded-for-admin-key-secret"


@contextmanager
def _serve(tmp_path: Path, upstream: FakeUpstream, **server: Any) -> Iterator[str]:
    config = {
        "models": [{"name": "up", "deployments": [{"type": "openai", "base_url": upstream.base_url, "model": "m"}]}],
        "record": {"store": None},
        "auth": {
            "enabled": True,
            "admin_key": ADMIN_KEY,
            "ui_session": {"login_max_failures": 2, "login_window_seconds": 600, "cookie_secure": "allow_http"},
        },
        "server": server,
    }
    path = tmp_path / f"opsgate-{len(server)}.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "opsgate.cli.main", "serve", "--config", str(path), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},  # no FORWARDED_ALLOW_IPS from outside
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (
            process.stderr.read().decode() if process.stderr else ""
        )
        time.sleep(0.1)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _login(url: str, key: str, client: str) -> int:
    """A login as the proxy would forward it for ``client``."""
    response = httpx.post(
        url + "/ui/login",
        data={"key": key},
        headers={"Origin": url, "X-Forwarded-For": client},
        follow_redirects=False,
    )
    return response.status_code


@pytest.mark.parametrize(
    ("server", "others_locked_out"),
    [
        ({}, False),  # uvicorn's default: the local proxy (127.0.0.1) is trusted
        ({"forwarded_allow_ips": []}, True),  # no proxy trusted: everyone is the proxy's address
    ],
)
def test_the_login_throttle_counts_the_client_the_trusted_proxy_names(
    tmp_path: Path, upstream_server: FakeUpstream, server: dict[str, Any], others_locked_out: bool
) -> None:
    with _serve(tmp_path, upstream_server, **server) as url:
        assert [_login(url, "og_wrong_guess", "203.0.113.5") for _ in range(3)] == [401, 401, 429]
        # Another client behind the same proxy, with the right key.
        assert _login(url, ADMIN_KEY, "198.51.100.7") == (429 if others_locked_out else 303)


def test_a_malformed_entry_is_refused_at_load() -> None:
    for bad in (["nope"], ["10.0.0.0/33"], ["127.0.0.1 "]):
        with pytest.raises(ConfigError, match="forwarded_allow_ips"):
            parse_config({"models": [], "server": {"forwarded_allow_ips": bad}})
    assert parse_config({"models": [], "server": {"forwarded_allow_ips": ["::1", "*"]}}).server.forwarded_allow_ips
