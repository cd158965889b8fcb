"""A call that runs out of time while waiting its turn for an in-process model is load, not the model failing.

Before, the deadline around the call also covered the wait in the embedded model's line, so calls queued
behind another tenant's long generations ended as 504 ``upstream_timeout`` and voted against the breaker:
an outside probe opened it for every tenant that way. Now they are 503 ``overloaded`` with Retry-After
and no verdict; the call that holds the model and runs out of time is still the model's 504.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway, wait_until

ADMIN = "bootstrap-admin-key-for-model-line-tests-0123456"
COUNTING = {"model": "smollm2", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,", "temperature": 0, "max_tokens": 400}


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    started = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN},
            "models": [
                {
                    "name": "smollm2",
                    "routing": {"deadline_seconds": 4, "retries": 0},
                    "deployments": [{"type": "llama_cpp", "n_threads": 1, "n_ctx": 2048}],
                }
            ],
        }
    )
    yield started
    started.server.stop()


def _key(gateway: Gateway, tenant: str) -> dict[str, str]:
    created = httpx.post(
        gateway.url + "/admin/keys",
        json={"tenant": tenant, "role": "service"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['secret']}"}


def test_a_call_that_times_out_waiting_for_the_model_is_a_503_and_no_breaker_vote(gateway: Gateway) -> None:
    a, b = _key(gateway, "a"), _key(gateway, "b")
    handle = gateway.app.state.gateway.router.handles["smollm2"][0]
    statuses: list[int] = []
    long_call = threading.Thread(
        target=lambda: statuses.append(
            httpx.post(gateway.url + "/v1/completions", json=COUNTING, headers=a, timeout=120).status_code
        ),
        daemon=True,
    )
    long_call.start()
    assert wait_until(lambda: handle.backend.queue.running == 1, 60), "tenant A's generation never started"
    started = time.monotonic()
    queued = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        headers={**b, "x-request-id": "queued-b"},
        timeout=120,
    )
    if handle.backend.queue.running == 0 and time.monotonic() - started < 3:
        pytest.skip("tenant A's generation ended before B had to wait (machine faster than assumed)")
    assert queued.status_code == 503, queued.text
    error = queued.json()["error"]
    assert (error["type"], error["code"]) == ("overloaded_error", "overloaded") and "Retry-After" in queued.headers
    record = gateway.records_for(queued.headers["x-request-id"])[0]
    assert (record["status"], record["error_type"], record["tenant"]) == (503, "overloaded_error", "b")
    long_call.join(120)
    # A's own call held the model past its deadline: that 504 is the model's (one vote); B's wait is none.
    assert statuses and handle.failures == (1 if statuses[0] == 504 else 0), (statuses, handle.failures)
    assert handle.breaker.status()["state"] == "closed"


def test_a_remote_call_that_waited_in_the_deployments_line_is_still_judged(upstream: FakeUpstream) -> None:
    # Review: the wait in the deployment's own line (before the call's window is measured) counted as load,
    # so B, which then held the slot against a hung upstream for its whole remaining window, got 503 and no
    # vote. Only a wait in an in-process model's line is load.
    upstream.script = Script(mode="hang")
    deployment = {
        "type": "openai",
        "base_url": upstream.base_url,
        "model": "m",
        "limits": {"max_in_flight": 1, "max_queue": 4, "queue_timeout": 30},
        "breaker": {"consecutive_failures": 100},
    }
    started = start_gateway(
        {"models": [{"name": "up", "routing": {"retries": 0, "deadline_seconds": 3}, "deployments": [deployment]}]}
    )
    try:
        handle = started.app.state.gateway.router.handles["up"][0]
        body = {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
        statuses: list[int] = []
        first = threading.Thread(
            target=lambda: statuses.append(
                httpx.post(started.url + "/v1/chat/completions", json=body, timeout=60).status_code
            )
        )
        first.start()
        assert wait_until(lambda: len(upstream.requests) == 1, 10)
        time.sleep(1.0)
        second = httpx.post(started.url + "/v1/chat/completions", json=body, timeout=60)
        first.join(60)
        assert statuses == [504] and second.status_code == 504, (statuses, second.text)
        assert second.json()["error"]["code"] == "upstream_timeout"
        assert handle.failures == 2  # both held the upstream and it did not answer: both are its failures
    finally:
        started.server.stop()


def test_a_line_that_stood_still_past_every_deadline_is_a_hung_model() -> None:
    from types import SimpleNamespace

    from opsgate.backends.work_queue import WorkQueue
    from opsgate.routing.router import _stuck

    async def run() -> None:
        line = WorkQueue("model m", slots=1)
        handle = SimpleNamespace(backend=SimpleNamespace(queue=line))
        await line.acquire()
        line._progress_at -= 1.5  # a job running for 1.5 s
        assert not _stuck(handle, 1.0)  # may still be a fallback's long job under a longer chain
        line._progress_at -= 1.0  # 2.5 s: past twice the longest deadline
        assert _stuck(handle, 1.0)
        line.release()
        assert not _stuck(handle, 1.0)

    import asyncio

    asyncio.run(run())
