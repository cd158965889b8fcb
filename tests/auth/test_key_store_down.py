"""An unreachable key store is a 503 at once, and keys seen recently go on working (probe-g G3).

Before: with PostgreSQL unreachable, every request whose key was not in the cache waited the pool's whole
timeout (10 s) and got a 500 "internal error in auth: PoolTimeout", while /readyz said 200 "ready" for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsgate.auth.authenticator import PROBE_GIVE_UP_SECONDS, STORE_RETRY_SECONDS, Authenticator
from opsgate.auth.key_store import CreatedKey, KeySpec, KeyStore
from opsgate.domain.auth_config import AuthConfig
from opsgate.domain.errors import AuthenticationError, AuthUnavailableError
from opsgate.store.record_log import open_store
from tests.fake_upstream import FakeUpstream
from tests.limits.support import TcpProxy
from tests.store.conftest import fresh_pg_schema
from tests.support import start_gateway, wait_until

ADMIN_KEY = "bootstrap-admin-key-for-store-down-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyKeys:
    """A real key store whose reads fail while ``down`` (as a database that cannot be reached)."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self.down = False
        self.reads = 0

    def lookup(self, secret: str) -> Any:
        self.reads += 1
        if self.down:
            raise OSError("connection refused")
        return self.keys.lookup(secret)

    def get(self, key_id: str) -> Any:
        self.reads += 1
        if self.down:
            raise OSError("connection refused")
        return self.keys.get(key_id)


def _setup(tmp_path: Path, **auth: Any) -> tuple[FlakyKeys, Clock, Authenticator, CreatedKey, CreatedKey]:
    keys = KeyStore(open_store(f"sqlite:///{tmp_path}/keys.db"))
    seen = keys.create(KeySpec(tenant="a", role="service"), "test")
    unseen = keys.create(KeySpec(tenant="a", role="service"), "test")
    flaky, clock = FlakyKeys(keys), Clock()
    config = AuthConfig(enabled=True, cache_ttl_seconds=30, **auth)
    return flaky, clock, Authenticator(config, lambda: flaky, clock), seen, unseen  # type: ignore[arg-type, return-value]


def test_a_recent_key_is_served_stale_and_others_get_a_503_without_waiting(tmp_path: Path) -> None:
    flaky, clock, auth, seen, unseen = _setup(tmp_path, stale_if_error_seconds=300)

    async def run() -> None:
        assert (await auth.authenticate(seen.secret)).key_id == seen.info.key_id
        flaky.down = True
        clock.now += 31  # past the TTL: a miss
        assert (await auth.authenticate(seen.secret)).key_id == seen.info.key_id  # before: the store's error
        with pytest.raises(AuthUnavailableError) as refused:
            await auth.authenticate(unseen.secret)
        assert refused.value.status == 503 and refused.value.code == "auth_unavailable"
        assert refused.value.headers.get("Retry-After")
        reads = flaky.reads
        assert reads == 2  # the second key did not wait on the store again: it failed a moment ago
        assert auth.status()["key_store"] == "unhealthy" and auth.status()["served_stale"] == 1
        clock.now += STORE_RETRY_SECONDS
        with pytest.raises(AuthUnavailableError):
            await auth.authenticate(unseen.secret)
        assert flaky.reads == reads + 1  # tried again after the interval
        flaky.down = False
        clock.now += STORE_RETRY_SECONDS
        assert (await auth.authenticate(unseen.secret)).key_id == unseen.info.key_id
        assert auth.status()["key_store"] == "ok"

    asyncio.run(run())


def test_stale_serving_is_bounded_by_time_the_keys_expiry_and_a_revocation(tmp_path: Path) -> None:
    flaky, clock, auth, seen, _ = _setup(tmp_path, stale_if_error_seconds=60)

    async def run() -> None:
        await auth.authenticate(seen.secret)
        flaky.down = True
        clock.now += 30 + 61  # fresh for 30 s, then 61 s stale: past the bound
        with pytest.raises(AuthUnavailableError):
            await auth.authenticate(seen.secret)
        flaky.down = False
        clock.now += STORE_RETRY_SECONDS
        await auth.authenticate(seen.secret)
        auth.forget()  # this process saw a revocation (or rotation): nothing it cached is served stale
        flaky.down = True
        with pytest.raises(AuthUnavailableError):
            await auth.authenticate(seen.secret)

    asyncio.run(run())


def test_an_expired_key_is_never_served_stale(tmp_path: Path) -> None:
    keys = KeyStore(open_store(f"sqlite:///{tmp_path}/keys.db"))
    short = keys.create(KeySpec(tenant="a", role="service", expires_at=time.time() + 5), "test")
    flaky, clock = FlakyKeys(keys), Clock()
    auth = Authenticator(AuthConfig(enabled=True, cache_ttl_seconds=30), lambda: flaky, clock)  # type: ignore[arg-type, return-value]

    async def run() -> None:
        await auth.authenticate(short.secret)
        flaky.down = True
        clock.now += 6  # the key's own expiry has passed (its cache entry ended there too)
        with pytest.raises(AuthUnavailableError):
            await auth.authenticate(short.secret)
        assert auth.status()["served_stale"] == 0

    asyncio.run(run())


def test_postgres_cut_from_a_gateway_answers_503_and_serves_recent_keys(upstream: FakeUpstream) -> None:
    with fresh_pg_schema("opsgate_authdown") as url:
        proxy = TcpProxy(5432).start()
        proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
        gateway = start_gateway(
            {
                "auth": {"enabled": True, "admin_key": ADMIN_KEY, "cache_ttl_seconds": 1},
                "models": [{"name": "m", "deployments": [deployment]}],
                "record": {"store": proxied},
            }
        )
        try:
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

            def new_key() -> str:
                made = httpx.post(gateway.url + "/admin/keys", headers=admin, json={"tenant": "t", "role": "service"})
                assert made.status_code == 201, made.text
                return str(made.json()["secret"])

            seen, unseen = new_key(), new_key()
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

            def call(key: str) -> httpx.Response:
                headers = {"Authorization": f"Bearer {key}"}
                return httpx.post(gateway.url + "/v1/chat/completions", headers=headers, json=body, timeout=60)

            assert call(seen).status_code == 200
            proxy.cut()
            time.sleep(1.2)  # past the cache TTL: the next call must read the store
            assert call(seen).status_code == 200  # before: 500 after the pool's 10 s
            refused = call(unseen)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "auth_unavailable" and refused.headers.get("retry-after")
            ready = httpx.get(gateway.url + "/readyz", headers=admin, timeout=30).json()
            assert ready["status"] == "degraded" and ready["auth"]["key_store"] == "unhealthy", ready
            proxy.restore()
            assert wait_until(lambda: call(unseen).status_code == 200, 60), "the store never came back"
        finally:
            gateway.server.stop()
            proxy.stop()


def test_while_down_one_read_at_a_time_tries_the_store_and_the_rest_are_answered_at_once(tmp_path: Path) -> None:
    # Review: the store counted as down only for a second after each failure, so most misses during an
    # outage still waited the pool's whole timeout each, holding the executor's few threads.
    flaky, clock, auth, seen, _ = _setup(tmp_path)
    gate = threading.Event()

    def slow_failure(secret: str) -> Any:
        flaky.reads += 1
        gate.wait(30)
        raise OSError("connection refused")

    async def run() -> None:
        await auth.authenticate(seen.secret)
        flaky.down = True
        clock.now += 31
        await auth.authenticate(seen.secret)  # the first failure: down from now on
        assert auth.status()["key_store"] == "unhealthy"
        clock.now += STORE_RETRY_SECONDS
        flaky.lookup = slow_failure  # type: ignore[method-assign]
        reads = flaky.reads
        probe = asyncio.ensure_future(auth.authenticate(seen.secret))  # the one read that tries the store
        await asyncio.sleep(0.05)
        answers = await asyncio.wait_for(asyncio.gather(*(auth.authenticate(seen.secret) for _ in range(20))), 5)
        assert all(a.key_id == seen.info.key_id for a in answers)  # served stale at once, no read each
        assert flaky.reads == reads + 1
        gate.set()
        assert (await probe).key_id == seen.info.key_id
        clock.now += 0.5  # still down (no read has succeeded), whatever the time since the last failure
        assert auth.status()["key_store"] == "unhealthy"

    asyncio.run(run())


def test_a_bug_in_a_read_is_not_an_outage_and_a_malformed_key_is_a_401(tmp_path: Path) -> None:
    # Review: any exception (a row it cannot parse) counted as the store being down for everyone.
    flaky, _clock, auth, _seen, unseen = _setup(tmp_path)

    def broken(secret: str) -> Any:
        raise ValueError("a row it cannot parse")

    async def run() -> None:
        flaky.lookup = broken  # type: ignore[method-assign]
        with pytest.raises(ValueError):
            await auth.authenticate(unseen.secret)
        assert auth.status()["key_store"] == "ok" and auth.store_failures == 0
        flaky.lookup = lambda secret: (_ for _ in ()).throw(OSError("down"))  # type: ignore[method-assign]
        with pytest.raises(AuthenticationError):
            await auth.authenticate("not-a-key-at-all")  # malformed: 401 without reading the store
        assert auth.store_failures == 0

    asyncio.run(run())


def test_clients_leaving_do_not_start_more_reads_and_a_hung_read_is_given_up(tmp_path: Path) -> None:
    # Second review: a probe's place was freed when its request was cancelled (a client hanging up) while its
    # read still held a worker thread, so random keys and hang-ups filled the executor; and a probe that hung
    # (a black-holed connection) kept every miss at 503 with no end.
    flaky, clock, auth, _seen, unseen = _setup(tmp_path)
    gate = threading.Event()

    def hanging(secret: str) -> Any:
        flaky.reads += 1
        gate.wait(30)
        raise OSError("connection timed out")

    async def run() -> None:
        flaky.down = True
        with pytest.raises(AuthUnavailableError):
            await auth.authenticate(unseen.secret)  # down from now on
        clock.now += STORE_RETRY_SECONDS
        flaky.lookup = hanging  # type: ignore[method-assign]
        reads = flaky.reads
        for _ in range(12):  # each starts to authenticate, then its client leaves
            call = asyncio.ensure_future(auth.authenticate(unseen.secret))
            await asyncio.sleep(0.01)
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, AuthUnavailableError):
                await call
        assert flaky.reads == reads + 1  # one read in flight, whoever left
        clock.now += PROBE_GIVE_UP_SECONDS  # that read hangs: given up on, the next miss tries again
        flaky.lookup = flaky.keys.lookup  # type: ignore[method-assign]
        assert (await auth.authenticate(unseen.secret)).key_id == unseen.info.key_id
        assert auth.status()["key_store"] == "ok"
        gate.set()

    asyncio.run(run())


def test_a_readiness_check_finds_the_store_back_without_a_cache_miss(tmp_path: Path) -> None:
    # Second review: only a cache miss cleared "down", so a replica serving cache hits said degraded forever.
    flaky, clock, auth, seen, unseen = _setup(tmp_path)

    async def run() -> None:
        await auth.authenticate(seen.secret)
        flaky.down = True
        with pytest.raises(AuthUnavailableError):
            await auth.authenticate(unseen.secret)
        flaky.down = False
        clock.now += STORE_RETRY_SECONDS
        assert auth.status()["key_store"] == "unhealthy"  # this check starts a read in the background

        async def back() -> bool:
            for _ in range(500):
                if auth.status()["key_store"] == "ok":
                    return True
                await asyncio.sleep(0.02)
            return False

        assert await back()

    asyncio.run(run())


def test_dashboard_sessions_are_refused_at_once_while_the_store_is_down(tmp_path: Path) -> None:
    # First review: a raw 500; second: a 503 only after the pool's whole wait.
    flaky, _clock, auth, _seen, unseen = _setup(tmp_path)

    async def run() -> None:
        flaky.down = True
        with pytest.raises(AuthUnavailableError):
            await auth.authenticate(unseen.secret)
        began = time.monotonic()
        with pytest.raises(AuthUnavailableError):
            await auth.authenticate_session("s" * 43)
        assert time.monotonic() - began < 1.0

    asyncio.run(run())
