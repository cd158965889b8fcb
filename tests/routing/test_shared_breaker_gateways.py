"""Two real gateways sharing breakers through the real Redis, in front of two scripted upstreams.

Deployment ``svc#0`` (upstream X, the cheap one, so ``cost`` routing always tries it first) fails
through gateway A until its breaker opens; gateway B, which never called X while it failed, then
routes around it. X recovers: both close. Redis goes away: each falls back to its own breaker,
and says so in ``/readyz`` and ``GET /admin/deployments``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from opsgate.domain.config import ConfigError, parse_config
from tests.fake_upstream import FakeUpstream, Script
from tests.limits.support import REDIS_URL, TcpProxy, scratch_prefix
from tests.support import Gateway, start_gateway, wait_until

INTERVAL = 0.1
# Long enough that B cannot reach half-open while the test checks it stays away, even on a loaded
# machine where each request takes a second; the recovery then waits for it on a condition.
OPEN_SECONDS = 15.0
SETTLE = 30.0  # generous deadline for anything that only has to happen eventually (syncs, probes)


@pytest.fixture()
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    x, y = FakeUpstream().start(), FakeUpstream().start()
    yield x, y
    x.stop()
    y.stop()


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    with scratch_prefix() as prefix:
        yield prefix


def gateway_config(x: FakeUpstream, y: FakeUpstream, redis_url: str, prefix: str) -> dict[str, Any]:
    breaker = {
        "consecutive_failures": 3,
        "open_seconds": OPEN_SECONDS,
        "shared": redis_url,
        "key_prefix": prefix,
        "sync_interval_seconds": INTERVAL,
    }

    def deployment(server: FakeUpstream, price: float) -> dict[str, Any]:
        return {
            "type": "openai",
            "base_url": server.base_url,
            "model": "m",
            "timeouts": {"connect": 10, "first_byte": 30, "total": 60},  # slow machine, not a slow upstream
            "price": {"input_per_million": price, "output_per_million": price},
            "breaker": breaker,
        }

    return {
        "models": [
            {
                "name": "svc",
                "routing": {"strategy": "cost", "retries": 1, "backoff_initial": 0.001},
                "deployments": [deployment(x, 1), deployment(y, 9)],
            }
        ],
        "record": {"store": None},
    }


def ask(gateway: Gateway) -> str:
    """One chat request through the official SDK; returns the deployment that served it."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="svc", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    raw.parse()
    return raw.headers["x-opsgate-deployment"]


def breaker(gateway: Gateway, label: str = "svc#0") -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(gateway.url + "/readyz").json()["deployments"][label]["breaker"]
    return state


@pytest.mark.timeout(300)
def test_replicas_open_together_close_together_and_fall_back_when_redis_goes(
    upstreams: tuple[FakeUpstream, FakeUpstream], redis_prefix: str
) -> None:
    x, y = upstreams
    proxy = TcpProxy(6379).start()  # Redis behind a proxy we can cut
    config = gateway_config(x, y, f"redis://127.0.0.1:{proxy.port}/0", redis_prefix)
    a, b = start_gateway(config), start_gateway(config)
    try:
        assert breaker(a)["scope"] == breaker(b)["scope"] == "shared"
        assert ask(b) == "svc#0"  # healthy: the cheap deployment serves

        # X fails; every request through A still succeeds (retry on Y) until A's breaker opens.
        x.script = Script(mode="status", status=500, body={"error": {"message": "X is down"}})
        served_by_a = [ask(a) for _ in range(3)]
        assert served_by_a == ["svc#1"] * 3

        # Traffic keeps flowing, as in production: on a loaded machine a sync can time out, and what it
        # carried is dropped by design (stale by the time Redis answers again), so three more failures
        # then open it. Every one of these requests still succeeds on Y.
        def opened() -> bool:
            return breaker(a)["state"] == "open" or (ask(a) == "svc#1" and breaker(a)["state"] == "open")

        assert wait_until(opened, timeout=SETTLE)
        # At the threshold (3), or past it on a loaded machine: a sync that timed out on our side may
        # still have landed in Redis, so the shared count can hold one failure more when it opens.
        reason = breaker(a)["reason"]
        assert reason.endswith(" consecutive failures") and int(reason.split()[0]) >= 3, reason

        # B never called X while it failed, yet sees the breaker open (within the staleness bound when
        # the machine is idle; the deadline is generous so a loaded machine does not fail the test)…
        calls_to_x = len(x.requests)
        assert wait_until(lambda: breaker(b)["state"] == "open", timeout=SETTLE)
        # …and routes around X: no call reaches it.
        assert [ask(b) for _ in range(5)] == ["svc#1"] * 5
        assert len(x.requests) == calls_to_x
        admin = httpx.get(b.url + "/admin/deployments").json()["data"]
        entry = next(d for d in admin if d["deployment"] == "svc#0")
        assert entry["failures"] == 0 and entry["breaker"]["state"] == "open"  # B's own count: no failure seen

        # X recovers. After open_seconds one probe (across both replicas) closes it for both.
        x.script = Script()
        assert wait_until(
            lambda: breaker(a)["state"] == breaker(b)["state"] == "half_open", timeout=OPEN_SECONDS + SETTLE
        )
        assert wait_until(lambda: ask(b) == "svc#0", timeout=SETTLE)  # B's first call asks for a lease, then probes
        assert wait_until(lambda: breaker(b)["state"] == "closed", timeout=SETTLE)  # once B's sync reports the probe
        assert wait_until(lambda: breaker(a)["state"] == "closed", timeout=SETTLE)
        assert ask(a) == "svc#0"
        assert breaker(a)["opened"] == breaker(b)["opened"] == 1

        # Redis goes: each gateway falls back to its own breaker, visibly.
        proxy.cut()
        assert wait_until(lambda: breaker(a)["scope"] == breaker(b)["scope"] == "local_fallback", timeout=SETTLE)
        assert httpx.get(a.url + "/readyz").json()["status"] == "degraded"  # visible, never silent
        shared = breaker(a)["shared"]
        # At least this one: on a loaded machine a sync may also have run past its 0.5 s socket timeout
        # earlier, which counts as an outage of its own (seen once at load ~10, with a CPU burner).
        assert shared["healthy"] is False and shared["outages"] >= 1 and shared["last_error"]
        x.script = Script(mode="status", status=500, body={"error": {"message": "X is down"}})
        assert [ask(a) for _ in range(4)] == ["svc#1"] * 4
        assert breaker(a)["state"] == "open"  # A's local breaker opened on A's own failures
        calls_to_x = len(x.requests)
        time.sleep(3 * INTERVAL)
        assert breaker(b)["state"] == "closed"  # B's local breaker saw nothing: no sharing while Redis is gone
        assert ask(b) == "svc#1" and len(x.requests) == calls_to_x + 1  # B still tries X itself

        # Redis is back: both follow the shared state again.
        x.script = Script()
        proxy.restore()
        assert wait_until(lambda: breaker(a)["scope"] == breaker(b)["scope"] == "shared", timeout=SETTLE)
        assert httpx.get(a.url + "/readyz").json()["status"] == "ready"
    finally:
        a.server.stop()
        b.server.stop()
        proxy.stop()


def test_shared_breaker_config_is_validated_with_its_path() -> None:
    config = gateway_config(FakeUpstream(), FakeUpstream(), REDIS_URL, "p:")
    config["models"][0]["deployments"][0]["breaker"] = {"shared": REDIS_URL, "sync_interval_seconds": 0}
    with pytest.raises(ConfigError, match=r"models\[0\]\.deployments\[0\]\.breaker\.sync_interval_seconds"):
        parse_config(config)
