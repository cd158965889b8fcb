"""Fault injection: real local upstreams misbehave on script; the gateway routes around them.

Two scripted upstreams (A and B, real HTTP servers) and gateways configured with retries, breakers
and fallbacks. Asserts what an operator is promised: requests succeed across an outage when a
healthy path exists, breakers open and close at their thresholds, nothing hangs past its deadline,
the process survives, and every request is in the record with the right status.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

MESSAGES = [{"role": "user", "content": "hi"}]


def deployment(server: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "type": "openai",
        "base_url": server.base_url,
        "model": "m",
        "timeouts": {"connect": 1, "first_byte": 1, "total": 5},
        **extra,
    }


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "svc", "messages": MESSAGES, **extra}


async def fire(gateway: Gateway, count: int, concurrency: int, **extra: Any) -> list[tuple[int, float, str]]:
    """``count`` requests, ``concurrency`` at a time: (status, seconds, request id) each."""
    results: list[tuple[int, float, str]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            rid = f"fo-{time.monotonic_ns()}-{n}"
            started = time.perf_counter()
            response = await client.post(
                gateway.url + "/v1/chat/completions", json=body(**extra), headers={"x-request-id": rid}
            )
            results.append((response.status_code, time.perf_counter() - started, rid))

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return results


def test_retry_moves_to_the_healthy_deployment_and_the_breaker_opens(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    a, b = upstreams
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "svc",
                    "routing": {"retries": 2, "backoff_initial": 0.001},
                    "deployments": [
                        deployment(a, breaker={"consecutive_failures": 3, "open_seconds": 60}),
                        deployment(b),
                    ],
                }
            ]
        }
    )
    try:
        a.script = Script(mode="status", status=500, body={"error": {"message": "A is down"}})
        results = asyncio.run(fire(gateway, 60, 4))
        assert all(status == 200 for status, _, _ in results)
        ready = httpx.get(gateway.url + "/readyz").json()
        assert ready["deployments"]["svc#0"]["breaker"]["state"] == "open"
        assert ready["deployments"]["svc#1"]["breaker"]["state"] == "closed"
        # Three failures in a row open it; up to 3 more calls were already on their way (4 clients).
        opened_after = len(a.requests)
        assert 3 <= opened_after <= 6
        more = asyncio.run(fire(gateway, 40, 4))
        assert all(status == 200 for status, _, _ in more)
        assert len(a.requests) == opened_after  # while open, A gets no traffic at all
        retried = [r for r in (gateway.records_for(rid)[0] for _, _, rid in results) if r.get("tags")]
        assert retried and all(r["deployment"] == "svc#1" and r["tags"]["attempts"] == 2 for r in retried)
    finally:
        gateway.server.stop()


def test_breaker_closes_after_recovery(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, b = upstreams
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "svc",
                    "routing": {"strategy": "cost", "retries": 1, "backoff_initial": 0.001},
                    "deployments": [
                        deployment(
                            a,
                            breaker={"consecutive_failures": 2, "open_seconds": 0.5},
                            price={"input_per_million": 1, "output_per_million": 1},
                        ),
                        deployment(b, price={"input_per_million": 9, "output_per_million": 9}),
                    ],
                }
            ]
        }
    )
    try:
        a.script = Script(mode="reset")
        asyncio.run(fire(gateway, 4, 1))
        assert httpx.get(gateway.url + "/readyz").json()["deployments"]["svc#0"]["breaker"]["state"] == "open"
        a.script = Script()  # A recovers
        time.sleep(0.6)  # open_seconds pass: the next call is a half-open probe
        a.requests.clear()
        results = asyncio.run(fire(gateway, 5, 1))
        assert all(status == 200 for status, _, _ in results)
        assert len(a.requests) == 5  # the probe succeeded, the breaker closed, the cheap deployment is back
        assert httpx.get(gateway.url + "/readyz").json()["deployments"]["svc#0"]["breaker"]["state"] == "closed"
    finally:
        gateway.server.stop()


def test_scripted_outage_with_fallback_keeps_999_per_mille(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, b = upstreams
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "svc",
                    "routing": {"retries": 1, "backoff_initial": 0.001, "fallbacks": ["backup"], "deadline_seconds": 5},
                    "deployments": [deployment(a, breaker={"consecutive_failures": 5, "open_seconds": 0.3})],
                },
                {"name": "backup", "deployments": [deployment(b)]},
            ]
        }
    )
    try:
        phases = [
            Script(),
            Script(mode="status", status=503, headers={"Retry-After": "1"}, body="overloaded"),
            Script(mode="reset"),
            Script(mode="malformed"),
            Script(mode="hang"),
            Script(mode="status", status=429, headers={"Retry-After": "2"}, body="slow down"),
            Script(delay=0.05),
            Script(),
        ]
        results: list[tuple[int, float, str]] = []
        for phase in phases:
            a.script = phase
            results += asyncio.run(fire(gateway, 150, 6))
        statuses = [status for status, _, _ in results]
        success = statuses.count(200) / len(statuses)
        assert success >= 0.999, f"{success:.4f} succeeded; failures: {[s for s in statuses if s != 200][:10]}"
        assert max(seconds for _, seconds, _ in results) < 5 + 1.0  # nothing hangs past the deadline
        assert len(b.requests) > 0
        # Every request is in the record, with the status the client saw and who served it.
        records = {rid: gateway.records_for(rid) for _, _, rid in results}
        assert all(len(found) == 1 for found in records.values())
        for status, _, rid in results:
            assert records[rid][0]["status"] == status
        served_by_backup = [r[0] for r in records.values() if r[0]["deployment"] == "backup#0"]
        assert served_by_backup and all(r["tags"]["served_by"] == "backup" for r in served_by_backup)
        assert httpx.get(gateway.url + "/healthz").status_code == 200  # the process survived all of it
    finally:
        gateway.server.stop()


def test_stream_falls_back_before_the_first_byte(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, b = upstreams
    gateway = start_gateway(
        {
            "models": [
                {"name": "svc", "routing": {"retries": 0, "fallbacks": ["backup"]}, "deployments": [deployment(a)]},
                {"name": "backup", "deployments": [deployment(b)]},
            ]
        }
    )
    try:
        a.script = Script(mode="reset")
        client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="svc", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        assert raw.headers["x-opsgate-model"] == "backup"
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert text == "w0 w1 w2 w3 w4 "
        # After the first byte there is no fallback: a cut stream is an error event, and a 502 in the record.
        a.script = Script(mode="truncate")
        response = httpx.post(
            gateway.url + "/v1/chat/completions", headers={"x-request-id": "cut-1"}, json=body(stream=True, model="svc")
        )
        assert "before it was complete" in response.text.splitlines()[-2] and len(b.requests) == 1
        assert gateway.records_for("cut-1")[0]["status"] == 502
    finally:
        gateway.server.stop()


def test_client_errors_are_not_retried(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, b = upstreams
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "svc",
                    "routing": {"retries": 3, "fallbacks": []},
                    "deployments": [deployment(a, weight=1), deployment(b, weight=0)],
                }
            ]
        }
    )
    try:
        a.script = Script(mode="status", status=400, body={"error": {"message": "bad max_tokens"}})
        response = httpx.post(gateway.url + "/v1/chat/completions", json=body())
        assert response.status_code == 400 and "bad max_tokens" in response.json()["error"]["message"]
        assert len(a.requests) == 1 and not b.requests
    finally:
        gateway.server.stop()


def test_deadline_bounds_a_hanging_upstream(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, _ = upstreams
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "svc",
                    "routing": {"retries": 5, "deadline_seconds": 1.0},
                    "deployments": [deployment(a, timeouts={"first_byte": 30, "total": 60})],
                }
            ]
        }
    )
    try:
        a.script = Script(mode="hang")
        started = time.perf_counter()
        response = httpx.post(gateway.url + "/v1/chat/completions", json=body(), timeout=30)
        elapsed = time.perf_counter() - started
        assert response.status_code == 504
        assert elapsed < 1.5, f"took {elapsed:.2f}s against a 1s deadline"
    finally:
        gateway.server.stop()


def test_backpressure_per_deployment(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, _ = upstreams
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "svc",
                    "routing": {"retries": 0},
                    "deployments": [deployment(a, limits={"max_in_flight": 2, "max_queue": 1, "queue_timeout": 5})],
                }
            ]
        }
    )
    try:
        a.script = Script(delay=0.5)
        results = asyncio.run(fire(gateway, 6, 6))
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200, 200, 200, 503, 503, 503]
    finally:
        gateway.server.stop()


def test_weighted_routing_follows_weights(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, b = upstreams
    gateway = start_gateway(
        {"models": [{"name": "svc", "deployments": [deployment(a, weight=3), deployment(b, weight=1)]}]}
    )
    try:
        asyncio.run(fire(gateway, 400, 8))
        share = len(a.requests) / (len(a.requests) + len(b.requests))
        assert 0.65 < share < 0.85, share
    finally:
        gateway.server.stop()


def test_admin_api_shows_breaker_state(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, _ = upstreams
    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "svc",
                    "routing": {"retries": 0},
                    "deployments": [deployment(a, breaker={"consecutive_failures": 1})],
                }
            ]
        }
    )
    try:
        a.script = Script(mode="status", status=500, body="down")
        httpx.post(gateway.url + "/v1/chat/completions", json=body())
        [entry] = httpx.get(gateway.url + "/admin/deployments").json()["data"]
        assert entry["deployment"] == "svc#0" and entry["breaker"]["state"] == "open"
        assert entry["failures"] == 1 and entry["breaker"]["reason"] == "1 consecutive failures"
    finally:
        gateway.server.stop()


def test_client_disconnect_cancels_the_upstream_call(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, _ = upstreams
    gateway = start_gateway(
        {"models": [{"name": "svc", "deployments": [deployment(a, timeouts={"first_byte": 60, "total": 60})]}]}
    )
    try:
        a.script = Script(mode="hang")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                gateway.url + "/v1/chat/completions", json=body(), timeout=0.5, headers={"x-request-id": "gone-1"}
            )
        [record] = gateway.records_for("gone-1")
        assert record["status"] == 499 and record["error_type"] == "client_disconnected"
        state = httpx.get(gateway.url + "/admin/deployments").json()["data"][0]
        assert state["in_flight"] == 0  # the upstream call was cancelled, its slot freed
        assert state["breaker"]["consecutive_failures"] == 0  # a client leaving is nobody's fault
    finally:
        gateway.server.stop()
