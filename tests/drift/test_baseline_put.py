"""``PUT /admin/drift/baseline`` over real HTTP: validated like the windows a check uses, an upsert that
concurrent PUTs cannot break (PostgreSQL and SQLite), no audit row for a PUT that changes nothing, and
one change per alias per ``manual_check_interval`` for a tenant admin (429 with ``Retry-After``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.drift.windows import WindowStore
from tests.fake_upstream import FakeUpstream
from tests.store.conftest import pg_url, store_url  # noqa: F401 - fixtures
from tests.support import Gateway, start_gateway

ADMIN = "bootstrap-admin-key-for-baselines-0123456789"
HOUR = 3600.0


def open_gateway(upstream: FakeUpstream, store: str | None = None, **drift: Any) -> tuple[Gateway, dict[str, str]]:
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
    config: dict[str, Any] = {
        "auth": {"enabled": True, "admin_key": ADMIN},
        "models": [{"name": "alpha", "deployments": [deployment]}],
        "drift": {"enabled": True, "embeddings": False, "interval": "1h", "per_tenant": True, **drift},
    }
    if store is not None:
        config["record"] = {"store": store}
    gw = start_gateway(config)
    keys = {"op": ADMIN}
    for tenant in ("a", "b"):
        created = call(gw, "POST", "/admin/keys", ADMIN, json={"tenant": tenant, "role": "admin"})
        keys[tenant] = created.json()["secret"]
    return gw, keys


@pytest.fixture()
def gateway(upstream_server: FakeUpstream, store_url: str) -> Iterator[tuple[Gateway, dict[str, str]]]:  # noqa: F811
    gw, keys = open_gateway(upstream_server, store_url, manual_check_interval=0)
    yield gw, keys
    gw.server.stop()


def call(gw: Gateway, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kwargs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return dict(body["error"])


def baseline_sets(gw: Gateway) -> int:
    entries = gw.app.state.gateway.record_log.store.audit_entries(10_000)
    return sum(1 for e in entries if e["action"] == "drift.baseline.set")


def hostile_bodies(now: float) -> list[tuple[str, dict[str, Any] | bytes]]:
    return [
        ("longer than 400 days", {"alias": "alpha", "start": 0, "end": 4e9}),
        ("overlaps the current window", {"alias": "alpha", "start": now - 20, "end": now + HOUR}),
        ("inside the current window", {"alias": "alpha", "start": now - 60, "end": now - 30}),
        ("in the future", {"alias": "alpha", "start": now + 30 * 86400, "end": now + 31 * 86400}),
        ("empty", {"alias": "alpha", "start": now - 3 * 86400, "end": now - 3 * 86400}),
        ("reversed", {"alias": "alpha", "start": now - 2 * 86400, "end": now - 3 * 86400}),
        ("huge", {"alias": "alpha", "start": 0, "end": 1e300}),
        ("NaN", b'{"alias": "alpha", "start": NaN, "end": 5}'),
        ("Infinity", b'{"alias": "alpha", "start": 0, "end": Infinity}'),
        ("string", {"alias": "alpha", "start": "0", "end": 5}),
    ]


def test_baselines_are_validated_like_the_windows_of_a_check(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    now = time.time()
    for key in ("a", "op"):
        for why, body in hostile_bodies(now):
            sent = {"content": body} if isinstance(body, bytes) else {"json": body}
            response = call(gw, "PUT", "/admin/drift/baseline", keys[key], **sent)
            assert response.status_code == 400, (why, response.text)
            error_of(response)
    assert call(gw, "GET", "/admin/drift/baseline", keys["a"], params={"alias": "alpha"}).status_code == 404
    good = {"alias": "alpha", "start": now - 10 * 86400, "end": now - 3 * 86400}
    response = call(gw, "PUT", "/admin/drift/baseline", keys["a"], json=good)
    assert response.status_code == 200, response.text
    assert response.json() == {**good, "tenant": "a"}
    # The pinned baseline is the reference of the tenant's next check, which runs (no WindowError).
    check = call(gw, "POST", "/admin/drift/check", keys["a"], json={"alias": "alpha"})
    assert check.status_code == 200 and check.json()["reference"]["start"] == good["start"]


def test_concurrent_puts_of_one_scope_never_fail(gateway: tuple[Gateway, dict[str, str]]) -> None:
    # On PostgreSQL a probe's 6 threads got 171 x 500 (UniqueViolation on drift_baselines_pkey) from
    # the DELETE-then-INSERT. Operators have no interval: their PUTs all reach the store at once.
    gw, _ = gateway
    start = time.time() - 30 * 86400
    codes: dict[int, int] = {}
    lock = threading.Lock()

    def put(worker: int) -> None:
        with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as client:
            for i in range(25):
                body = {"alias": "alpha", "tenant": "a", "start": start + worker * 100 + i, "end": start + 86400}
                status = client.put("/admin/drift/baseline", json=body).status_code
                with lock:
                    codes[status] = codes.get(status, 0) + 1

    threads = [threading.Thread(target=put, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == {200: 150}
    found = WindowStore(gw.app.state.gateway.record_log.store).baseline("alpha", "a")
    assert found is not None and found[1] == start + 86400


def test_a_put_that_changes_nothing_writes_no_audit_row(gateway: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = gateway
    now = time.time()
    body = {"alias": "alpha", "start": now - 5 * 86400, "end": now - 4 * 86400}
    before = baseline_sets(gw)
    for _ in range(5):
        response = call(gw, "PUT", "/admin/drift/baseline", keys["a"], json=body)
        assert response.status_code == 200 and response.json() == {**body, "tenant": "a"}
    assert baseline_sets(gw) == before + 1
    moved = call(gw, "PUT", "/admin/drift/baseline", keys["a"], json={**body, "end": now - 3 * 86400})
    assert moved.status_code == 200 and baseline_sets(gw) == before + 2


def test_a_tenant_admin_changes_a_baseline_at_most_once_per_interval(upstream_server: FakeUpstream) -> None:
    # A probe's tenant admin made 4,261 PUTs in 15 s, each an append-only audit row, and another
    # tenant's chat latency went from 7.7 to 19.8 ms.
    gw, keys = open_gateway(upstream_server, manual_check_interval=30)
    try:
        now = time.time()
        body: dict[str, Any] = {"alias": "alpha", "start": now - 5 * 86400, "end": now - 4 * 86400}
        before = baseline_sets(gw)
        assert call(gw, "PUT", "/admin/drift/baseline", keys["a"], json=body).status_code == 200
        same = call(gw, "PUT", "/admin/drift/baseline", keys["a"], json=body)  # unchanged: not limited
        assert same.status_code == 200 and same.json()["end"] == body["end"]
        changed = call(gw, "PUT", "/admin/drift/baseline", keys["a"], json={**body, "start": now - 6 * 86400})
        assert changed.status_code == 429, changed.text
        error = error_of(changed)
        assert error["type"] == "rate_limit_error" and error["code"] == "drift_baseline_rate_limited"
        assert 1 <= int(changed.headers["retry-after"]) <= 30
        assert (
            call(gw, "GET", "/admin/drift/baseline", keys["a"], params={"alias": "alpha"}).json()["end"] == body["end"]
        )
        assert baseline_sets(gw) == before + 1
        # Other tenants and the operators are not held back by it.
        assert call(gw, "PUT", "/admin/drift/baseline", keys["b"], json=body).status_code == 200
        for shift in (1, 2):
            moved = {**body, "tenant": "a", "start": body["start"] - shift}
            assert call(gw, "PUT", "/admin/drift/baseline", ADMIN, json=moved).status_code == 200
    finally:
        gw.server.stop()
