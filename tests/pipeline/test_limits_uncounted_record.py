"""A request let through uncounted while the limits' Redis was unreachable says so in its record (probe-g G8).

With ``on_redis_error: open`` such requests pass unmetered; before, only an in-process counter knew, so an
operator could not find afterwards which keys went unmetered.
"""

from __future__ import annotations

import httpx

from tests.fake_upstream import FakeUpstream
from tests.support import free_port, start_gateway


def test_an_uncounted_admission_is_tagged_in_its_record(upstream: FakeUpstream) -> None:
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m", "breaker": {"enabled": False}}
    gateway = start_gateway(
        {
            "models": [{"name": "up", "deployments": [deployment]}],
            "limits": {
                "enabled": True,
                "redis": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
                "on_redis_error": "open",
                "rules": [{"per": "user", "requests_per_minute": 1}],
            },
        }
    )
    try:
        body = {"model": "up", "messages": [{"role": "user", "content": "hi"}], "user": "alice"}
        answer = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        records = gateway.records_for(answer.headers["x-request-id"], timeout=30)
    finally:
        gateway.server.stop()
    assert len(records) == 1, records
    assert records[0]["tags"].get("limits") == "uncounted", records[0]["tags"]
