"""Two fake upstreams for the routing tests, started once per module and reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_upstream import FakeUpstream, Script


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    first, second = FakeUpstream().start(), FakeUpstream().start()
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture()
def upstreams(servers: tuple[FakeUpstream, FakeUpstream]) -> tuple[FakeUpstream, FakeUpstream]:
    """Both upstreams with an empty script (answer normally) and no requests seen."""
    for server in servers:
        server.script = Script()
        server.requests.clear()
    return servers
