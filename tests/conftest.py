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
