"""A half-open probe whose client hangs up must not leave the breaker half-open for good."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.support import start_gateway


@pytest.fixture()
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


def test_a_cancelled_probe_gives_its_slot_back(upstream: FakeUpstream) -> None:
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "svc",
                    "routing": {"retries": 0},
                    "deployments": [
                        {
                            "type": "openai",
                            "base_url": upstream.base_url,
                            "model": "m",
                            "timeouts": {"connect": 1, "first_byte": 60, "total": 60},
                            "breaker": {"consecutive_failures": 1, "open_seconds": 0.3},
                        }
                    ],
                }
            ],
            "record": {"store": None},
        }
    )
    url = gateway.url + "/v1/chat/completions"
    body = {"model": "svc", "messages": [{"role": "user", "content": "hi"}]}
    try:
        upstream.script = Script(mode="status", status=500, body={"error": {"message": "down"}})
        assert httpx.post(url, json=body).status_code == 502
        time.sleep(0.35)  # half-open: the next call is the probe
        upstream.script = Script(mode="hang")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json=body, timeout=0.5)  # the probe's client leaves: no verdict
        upstream.script = Script()
        calls = len(upstream.requests)
        response = httpx.post(url, json=body)
        assert response.status_code == 200, response.text  # the slot came back: this call probes, and closes it
        assert len(upstream.requests) == calls + 1
        state = httpx.get(gateway.url + "/admin/deployments").json()["data"][0]["breaker"]
        assert state["state"] == "closed"
    finally:
        gateway.server.stop()
