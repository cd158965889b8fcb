"""``opsgate redteam run`` against a gateway whose guards are off says so up front (exit 2), rather
than sending the whole suite to end with "recall 0%"."""

from __future__ import annotations

import time

from click.testing import CliRunner

from opsgate.cli.main import cli
from tests.conftest import upstream_config
from tests.fake_upstream import FakeUpstream
from tests.support import start_gateway


def test_redteam_run_refuses_a_gateway_without_guards(upstream: FakeUpstream) -> None:
    gateway = start_gateway(upstream_config(upstream.base_url))
    try:
        started = time.monotonic()
        result = CliRunner().invoke(cli, ["redteam", "run", "-m", "up", "--base-url", gateway.base_url])
        took = time.monotonic() - started
    finally:
        gateway.server.stop()
    assert result.exit_code == 2, result.output
    assert "guards are off" in result.output and "guard.enabled" in result.output
    assert not upstream.requests  # not one case was sent
    assert took < 60
