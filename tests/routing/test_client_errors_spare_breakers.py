"""A client's bad data is its own 400, answered before any backend is called; it never opens a breaker.

Before: an integer beyond 64 bits (``seed`` or any unknown field) made orjson raise inside the
upstream backend, which the router counted as a deployment failure once per attempt, so two such
requests opened the breaker and every client then got 503 ``circuit_open``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.routing.deployment import DeploymentHandle
from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture()
def gateway(upstream: FakeUpstream) -> Iterator[Gateway]:
    """One upstream deployment with retries and a breaker that opens after two failures."""
    gw = start_gateway(
        {
            "models": [
                {
                    "name": "svc",
                    "routing": {"retries": 2, "backoff_initial": 0.001},
                    "deployments": [
                        {
                            "type": "openai",
                            "base_url": upstream.base_url,
                            "model": "m",
                            "breaker": {"consecutive_failures": 2, "open_seconds": 60},
                        }
                    ],
                }
            ]
        }
    )
    yield gw
    gw.server.stop()


def handle(gateway: Gateway) -> DeploymentHandle:
    """The deployment as the router sees it (breaker, counters)."""
    return gateway.app.state.gateway.router.handles["svc"][0]  # type: ignore[no-any-return]


def post_raw(gateway: Gateway, raw: bytes) -> httpx.Response:
    return httpx.post(gateway.url + CHAT, content=raw, headers={"content-type": "application/json"}, timeout=30)


BASE = b'{"model":"svc","messages":[{"role":"user","content":"hi"}]'
HOSTILE: list[tuple[bytes, str | None]] = [
    (BASE + b',"seed":123456789012345678901234567890}', "seed"),
    (BASE + b',"seed":-9223372036854775809}', "seed"),
    (BASE + b',"extra":{"a":[1,18446744073709551616]}}', "extra.a[1]"),
    (b'{"model":"svc","messages":[{"role":"user","content":"hi","x":99999999999999999999}]}', "messages[0].x"),
    (
        BASE + b',"tools":[{"type":"function","function":'
        b'{"name":"f","parameters":{"type":"object","properties":{"n":{"type":"integer","maximum":1e400}}}}}]}',
        "tools[0].function.parameters.properties.n.maximum",
    ),
    (BASE + b',"extra":NaN}', "extra"),
    (BASE + b',"extra":[-Infinity]}', "extra[0]"),
    (BASE + b',"temperature":NaN}', "temperature"),
    (BASE + b',"deep":' + b"[" * 100 + b"]" * 100 + b"}", None),
]


@pytest.mark.parametrize(("raw", "param"), HOSTILE)
def test_hostile_numbers_are_400s_naming_the_field(
    gateway: Gateway, upstream: FakeUpstream, raw: bytes, param: str | None
) -> None:
    response = post_raw(gateway, raw)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    else:
        assert error["param"].startswith("deep[0]")
    [record] = gateway.records_for(response.headers["x-request-id"])
    assert record["status"] == 400
    assert not upstream.requests  # answered before any backend was called


def test_many_hostile_requests_leave_the_breaker_closed(gateway: Gateway, upstream: FakeUpstream) -> None:
    for raw, _ in HOSTILE * 2:
        assert post_raw(gateway, raw).status_code == 400
    state = handle(gateway)
    assert state.breaker.status()["state"] == "closed"
    assert state.failures == 0 and not upstream.requests
    ok = httpx.post(gateway.url + CHAT, json={"model": "svc", "messages": MESSAGES}, timeout=30)
    assert ok.status_code == 200, ok.text


def test_the_largest_64_bit_values_are_forwarded(gateway: Gateway, upstream: FakeUpstream) -> None:
    body: dict[str, Any] = {"model": "svc", "messages": MESSAGES, "seed": 2**63 - 1, "extra": [-(2**63), 1.5e300]}
    response = httpx.post(gateway.url + CHAT, json=body, timeout=30)
    assert response.status_code == 200, response.text
    [sent] = upstream.requests
    assert sent["body"]["seed"] == 2**63 - 1 and sent["body"]["extra"] == [-(2**63), 1.5e300]
