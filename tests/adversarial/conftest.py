"""A gateway to attack: auth on, the real request log (SQLite or PostgreSQL), the fake upstream behind it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsgate.domain.config import parse_config
from tests.fake_upstream import FakeUpstream, Script
from tests.store.conftest import fresh_pg_schema
from tests.support import Gateway, isolated

ADMIN_KEY = "og_adminkey0_hostile-suite-admin-secret"


def hostile_config(upstream_url: str, store: str | None = None) -> dict[str, Any]:
    """Auth on, retries and a breaker that opens after two failures: a client mistake must never count."""
    deployment = {
        "type": "openai",
        "base_url": upstream_url,
        "model": "real-model",
        "breaker": {"enabled": True, "consecutive_failures": 2, "open_seconds": 60},
    }
    config: dict[str, Any] = {
        "server": {"body_timeout_seconds": 5},  # slow-body tests wait this long, not the default 30 s
        "auth": {"enabled": True, "admin_key": ADMIN_KEY},
        "models": [
            {"name": "up", "routing": {"retries": 1}, "deployments": [deployment]},
            {
                "name": "up-embed",
                "kind": "embedding",
                "deployments": [{**deployment, "model": "real-embed"}],
            },
        ],
    }
    if store is not None:
        config["record"] = {"store": store}
    return config


class Target:
    """The gateway under attack and the calls the tests make against it."""

    def __init__(self, gateway: Gateway, upstream: FakeUpstream) -> None:
        self.gateway = gateway
        self.upstream = upstream
        self.client = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None, **headers: str) -> httpx.Response:
        """POST JSON (or ``raw`` bytes as JSON) with the admin key."""
        content = raw if raw is not None else None
        if raw is None:
            return self.client.post(path, json=body, headers=headers)
        return self.client.post(path, content=content, headers={"Content-Type": "application/json", **headers})

    def chat(self, content: str = "hello", **extra: Any) -> httpx.Response:
        body = {"model": "up", "messages": [{"role": "user", "content": content}], **extra}
        return self.post("/v1/chat/completions", body)

    def flush(self) -> None:
        """Wait until the writer stored everything journaled so far."""
        record_log = self.gateway.app.state.gateway.record_log
        assert record_log is not None and record_log.writer is not None
        assert record_log.writer.flush(timeout=60), record_log.status()

    def stored(self, request_id: str) -> dict[str, Any] | None:
        """The stored record with this gateway id, or None."""
        response = self.client.get(f"/admin/requests/{request_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return dict(response.json())

    def assert_recorded(self, response: httpx.Response) -> dict[str, Any]:
        """The response's record (by its ``x-request-id``), after the writer caught up."""
        request_id = response.headers.get("x-request-id")
        assert request_id, f"no x-request-id on a {response.status_code}"
        self.flush()
        record = self.stored(request_id)
        assert record is not None, f"{response.status_code} {request_id} was answered but not recorded"
        return record

    def assert_healthy(self) -> None:
        """Every breaker closed, and a normal request answered promptly."""
        readyz = self.client.get("/readyz").json()
        for label, state in readyz["deployments"].items():
            breaker = state.get("breaker") or {}
            assert breaker.get("state") == "closed" and breaker.get("opened") == 0, f"{label}: {breaker}"
        started = time.monotonic()
        response = self.chat("are you still there?")
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 10


@pytest.fixture(scope="module")
def hostile_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(
    request: pytest.FixtureRequest, hostile_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """The gateway to attack, once per store."""
    directory: Path = tmp_path_factory.mktemp("hostile")
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(fresh_pg_schema("opsgate_hostile")) if request.param == "postgres" else None
        config = isolated(parse_config(hostile_config(hostile_upstream.base_url, store)), str(directory))
        gateway = Gateway(config, keep_record_config=True)
        gateway.server.start("/healthz")
        target = Target(gateway, hostile_upstream)
        try:
            yield target
        finally:
            target.client.close()
            gateway.server.stop()


@pytest.fixture(autouse=True)
def _upstream_ok(hostile_upstream: FakeUpstream) -> None:
    hostile_upstream.script = Script()
