"""Shared fixtures: the embedded gateway (real model), a fake upstream, and a gateway in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway


@pytest.fixture(scope="session")
def embedded() -> Iterator[Gateway]:
    """The embedded default config (SmolLM2 + MiniLM) served on loopback, models loaded."""
    from opsgate.domain.config import load_config

    gateway = Gateway(load_config(None))
    gateway.server.start("/readyz", timeout=120)
    yield gateway
    gateway.server.stop()


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture()
def upstream(upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    """The fake upstream, with its script and request log reset for each test."""
    upstream_server.script = Script()
    upstream_server.requests.clear()
    yield upstream_server


def upstream_config(base_url: str, **deployment: Any) -> dict[str, Any]:
    """One upstream alias with no retries and no breaker: these tests look at single calls."""
    return {
        "models": [
            {
                "name": "up",
                "routing": {"retries": 0},
                "deployments": [
                    {
                        "type": "openai",
                        "base_url": base_url,
                        "model": "real-model",
                        "api_key": "sk-upstream-secret",
                        "breaker": {"enabled": False},
                        **deployment,
                    }
                ],
            },
            {
                "name": "up-embed",
                "kind": "embedding",
                "deployments": [{"type": "openai", "base_url": base_url, "model": "real-embed"}],
            },
        ]
    }


@pytest.fixture(scope="session")
def proxied(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    """A gateway whose models are served by the fake upstream."""
    gateway = start_gateway(upstream_config(upstream_server.base_url, timeouts={"first_byte": 2, "total": 5}))
    yield gateway
    gateway.server.stop()


# -- session guard: record writer processes left running -------------------------------------------
# A writer process runs in its own session and outlives the gateway that started it (by design), so
# a test that does not stop its own leaves one logging into later tests' captured output. One /proc
# scan at the end of the run; a writer still finishing gets 5 s before it is reported.

WRITERS_LEFT = pytest.StashKey[list[str]]()


def _writers_left(basetemp: Any) -> dict[int, str]:
    """Live writer processes this run started (pytest's children, or serving a journal in its temp dir)."""
    import contextlib
    import os
    from pathlib import Path

    if not Path("/proc").is_dir():
        return {}
    prefix = f"{basetemp}{os.sep}"
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if b"opsgate.store.writer_process" not in (proc / "cmdline").read_bytes():
                continue
            state, ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if state == "Z":
                continue
            paths = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
            if int(ppid) == os.getpid() or any(path.startswith(prefix) for path in paths):
                found[int(proc.name)] = next((path for path in paths if path.endswith("writer.lock")), "?")
    return found


@pytest.fixture(scope="session", autouse=True)
def no_writer_process_left(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the run, report (and SIGTERM) record writer processes that tests left running."""
    yield
    import contextlib
    import os
    import signal
    import time

    basetemp = tmp_path_factory.getbasetemp()
    deadline = time.monotonic() + 5
    while (left := _writers_left(basetemp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        request.config.stash[WRITERS_LEFT] = [f"pid {pid}, lock {lock}" for pid, lock in sorted(left.items())]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    left = config.stash.get(WRITERS_LEFT, [])
    if left:
        terminalreporter.section("record writer processes left running by tests (sent SIGTERM)", red=True)
        for line in left:
            terminalreporter.write_line(line)
