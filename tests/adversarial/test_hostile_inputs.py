"""One hostile request at a time, on both stores: each gets a 4xx (or a correct 200), is recorded, and
leaves the gateway healthy for everyone else (breakers closed, a normal request answered promptly).

This module is meant to grow: every new input path adds its cases here.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.adversarial.conftest import ADMIN_KEY, Target

pytestmark = pytest.mark.timeout(600)

BIG_INTS = [2**63, -(2**63) - 1, 2**64, 10**20, 10**400]


def _raw_chat(extra: str) -> bytes:
    return ('{"model": "up", "messages": [{"role": "user", "content": "hi"}]' + extra + "}").encode()


_HELLO = {"model": "up", "messages": [{"role": "user", "content": "hi"}]}


def _incompressible(length: int) -> str:
    return base64.b64encode(os.urandom(length)).decode()[:length]


def _with_raw_id(target: Target, request_id: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json", "x-request-id": request_id}
    return target.client.post("/v1/chat/completions", json=_HELLO, headers=headers)


# name -> (call, acceptable statuses). Every one is a client's doing: never a 5xx.
Case = tuple[Callable[[Target], httpx.Response], set[int]]
CASES: dict[str, Case] = {
    **{f"seed {n}": ((lambda t, n=n: t.chat(seed=n)), {400}) for n in BIG_INTS},
    **{f"unknown field {n}": ((lambda t, n=n: t.chat(foo={"deep": [n]})), {400}) for n in BIG_INTS},
    "max_tokens 10**30": ((lambda t: t.chat(max_tokens=10**30)), {400}),
    "temperature NaN literal": (
        (lambda t: t.post("/v1/chat/completions", raw=_raw_chat(', "temperature": NaN'))),
        {400},
    ),
    "temperature Infinity literal": (
        (lambda t: t.post("/v1/chat/completions", raw=_raw_chat(', "temperature": Infinity'))),
        {400},
    ),
    "temperature 1e400": ((lambda t: t.post("/v1/chat/completions", raw=_raw_chat(', "temperature": 1e400'))), {400}),
    "top_p -1e400": ((lambda t: t.post("/v1/chat/completions", raw=_raw_chat(', "top_p": -1e400'))), {400}),
    "NUL in content": ((lambda t: t.chat("a\u0000b")), {200}),
    "NUL in user": ((lambda t: t.chat(user="eve\u0000")), {200, 400}),
    "NUL in stop": ((lambda t: t.chat(stop=["\u0000"])), {200, 400}),
    "NUL in model": ((lambda t: t.post("/v1/chat/completions", {"model": "up\u0000", "messages": []})), {400, 404}),
    "NUL in metadata": ((lambda t: t.chat(metadata={"k\u0000": "v\u0000"})), {200, 400}),
    # Incompressible, past PostgreSQL's index entry limit: one such model name used to hold every later
    # record in the journal (the store read "index row requires 9024 bytes" as an outage).
    "model of 9,000 random characters": (
        (lambda t: t.post("/v1/chat/completions", {"model": _incompressible(9000), "messages": []})),
        {400},
    ),
    "embedding model of 3,000 random characters": (
        (lambda t: t.post("/v1/embeddings", {"model": _incompressible(3000), "input": "x"})),
        {400},
    ),
    "user of 9,000 random characters": ((lambda t: t.chat(user=_incompressible(9000))), {400}),
    "lone surrogate in content": (
        (lambda t: t.post("/v1/chat/completions", raw=_raw_chat(', "user": "\\ud800x"'))),
        {200, 400},
    ),
    "invalid UTF-8 body": (
        (
            lambda t: t.post(
                "/v1/chat/completions", raw=b'{"model": "up", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
            )
        ),
        {400},
    ),
    "not JSON": ((lambda t: t.post("/v1/chat/completions", raw=b"{not json")), {400}),
    "JSON nested 100k deep": ((lambda t: t.post("/v1/chat/completions", raw=b"[" * 100_000 + b"]" * 100_000)), {400}),
    "body a list": ((lambda t: t.post("/v1/chat/completions", [1, 2, 3])), {400}),
    "messages a string": ((lambda t: t.post("/v1/chat/completions", {"model": "up", "messages": "hi"})), {400}),
    "wrong content type": (
        (lambda t: t.client.post("/v1/chat/completions", content=b"hi", headers={"Content-Type": "text/plain"})),
        {415},
    ),
    "body past the limit": ((lambda t: t.chat("x" * (4 * 1024 * 1024 + 10))), {413}),
    "prompt of 1.1 MB": ((lambda t: t.chat("y" * 1_100_000)), {200}),
    "prompt of 3.9 MB": ((lambda t: t.chat("z" * 3_900_000)), {200}),
    "embeddings of 4 MB": (
        (lambda t: t.post("/v1/embeddings", {"model": "up-embed", "input": ["w " * 1000] * 2000})),
        {200, 400, 413},
    ),
    "embeddings batch of 100k items": (
        (lambda t: t.post("/v1/embeddings", {"model": "up-embed", "input": ["a"] * 100_000})),
        {200, 400},
    ),
    "malformed json_schema $ref": (
        (
            lambda t: t.chat(
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#"}}}
            )
        ),
        {200, 400},  # an upstream deployment judges the schema itself; it must never count as its failure
    ),
    "n 10**9": ((lambda t: t.chat(n=10**9)), {400}),
    "logit_bias huge": ((lambda t: t.chat(logit_bias={str(i): 1 for i in range(100_000)})), {200, 400, 413}),
    "request id 10 KB long": (
        (lambda t: t.post("/v1/chat/completions", _HELLO, **{"x-request-id": "r" * 10_000})),
        {200},
    ),
    "request id with UTF-8 bytes": ((lambda t: _with_raw_id(t, "café\u202e".encode())), {200}),
    "request id with a tab and quotes": ((lambda t: _with_raw_id(t, b'a\t"b"<script>')), {200}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_request_is_a_client_error_recorded_and_harmless(target: Target, name: str) -> None:
    call, statuses = CASES[name]
    response = call(target)
    assert response.status_code in statuses, f"{name}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert {"message", "type", "param", "code"} <= set(error), error
    target.assert_recorded(response)
    target.assert_healthy()


def test_many_client_mistakes_never_open_a_breaker(target: Target) -> None:
    for _ in range(5):
        assert target.chat(seed=2**64).status_code == 400
        assert target.post("/v1/chat/completions", raw=_raw_chat(', "temperature": NaN')).status_code == 400
    target.assert_healthy()


def test_a_client_request_id_never_hides_another_record(target: Target) -> None:
    shared = f"victim-{time.time_ns()}"
    # An unauthenticated request first (recorded as a 401), then two real ones with the same client id.
    anonymous = httpx.post(
        target.gateway.url + "/v1/chat/completions",
        json={"model": "up", "messages": [{"role": "user", "content": "who am i"}]},
        headers={"x-request-id": shared},
    )
    assert anonymous.status_code == 401
    first = target.post(
        "/v1/chat/completions",
        {"model": "up", "messages": [{"role": "user", "content": "one"}]},
        **{"x-request-id": shared},
    )
    second = target.post(
        "/v1/chat/completions",
        {"model": "up", "messages": [{"role": "user", "content": "two"}]},
        **{"x-request-id": shared},
    )
    assert first.status_code == second.status_code == 200
    ids = {r.headers["x-request-id"] for r in (anonymous, first, second)}
    assert len(ids) == 3, "the gateway's ids must be unique whatever the client sends"
    for response in (anonymous, first, second):
        target.assert_recorded(response)
    found = target.client.get("/admin/requests", params={"client_request_id": shared}).json()["data"]
    assert sorted(r["status"] for r in found) == [200, 200, 401]


ADMIN_PARAMS = ["q", "model", "user", "tenant", "tag", "cursor", "client_request_id", "since", "until", "limit"]
HOSTILE_VALUES = ["\u0000", "%00abc", "a\u0000b", "nan", "1e400", "-inf", "\ud800", "x" * 5000, "' OR 1=1 --", "{}"]


@pytest.mark.parametrize("path", ["/admin/requests", "/admin/requests/export", "/admin/usage", "/admin/errors"])
def test_admin_query_parameters_never_break_the_server(target: Target, path: str) -> None:
    target.chat("a row to search")
    target.flush()
    for param in ADMIN_PARAMS:
        for value in HOSTILE_VALUES:
            response = target.client.get(path, params={param: value.encode("utf-8", "surrogatepass").decode("latin-1")})
            assert response.status_code < 500, f"{path}?{param}={value!r}: {response.status_code} {response.text[:200]}"
    nul_search = target.client.get("/admin/requests", params={"q": "\u0000"})
    assert nul_search.status_code == 400 or nul_search.json()["data"] == [], "q=NUL must not match every row"
    for bad in ("nan", "1e400", "-1e400", "inf"):
        assert target.client.get("/admin/usage", params={"since": bad}).status_code == 400
    for path_id in ("%00", "a%00b", "x" * 3000, "..%2F..%2Fetc"):
        response = target.client.get(f"/admin/requests/{path_id}")
        assert response.status_code in {400, 404}, f"/admin/requests/{path_id[:20]}: {response.status_code}"


def _slow_body(target: Target, path: str, authorised: bool) -> tuple[float, bytes]:
    """Send headers promising 1,000 bytes, then one byte a second; how long until the gateway cut us off."""
    host, port = "127.0.0.1", target.gateway.server.port
    auth = f"Authorization: Bearer {ADMIN_KEY}\r\n" if authorised else ""
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        answer = b""
        sock.settimeout(1.0)
        while time.monotonic() - started < 60:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.sendall(b" ")
                except OSError:
                    break
                continue
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
    return time.monotonic() - started, answer


@pytest.mark.parametrize(
    "path,authorised", [("/v1/chat/completions", True), ("/ui/login", False), ("/admin/keys", True)]
)
def test_a_slow_body_is_cut_off(target: Target, path: str, authorised: bool) -> None:
    timeout = target.gateway.config.server.body_timeout_seconds
    elapsed, answer = _slow_body(target, path, authorised)
    assert answer.split(b" ")[1:2] in ([b"408"], [b"403"], [b"401"]), answer[:200]
    assert elapsed < timeout + 20, f"cut off after {elapsed:.1f}s (body timeout {timeout}s)"
    target.assert_healthy()


def test_concurrent_abuse_does_not_degrade_a_normal_client(target: Target) -> None:
    hostile_bodies: list[bytes] = [
        _raw_chat(', "seed": 18446744073709551616'),
        _raw_chat(', "temperature": NaN'),
        b"[" * 50_000,
        ('{"model": "up", "messages": [{"role": "user", "content": "' + "q" * 1_000_000 + '"}]}').encode(),
        _raw_chat(', "user": "\\u0000"'),
    ]

    async def attack(client: httpx.AsyncClient, body: bytes) -> int:
        response = await client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        return response.status_code

    async def normal(client: httpx.AsyncClient) -> list[float]:
        times = []
        for i in range(10):
            started = time.monotonic()
            response = await client.post(
                "/v1/chat/completions", json={"model": "up", "messages": [{"role": "user", "content": f"n{i}"}]}
            )
            assert response.status_code == 200, response.text
            times.append(time.monotonic() - started)
        return times

    async def main() -> tuple[list[int], list[float]]:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=target.gateway.url, headers=headers, timeout=120, limits=limits
        ) as client:
            attacks = [attack(client, hostile_bodies[i % len(hostile_bodies)]) for i in range(60)]
            results = await asyncio.gather(normal(client), *attacks)
        return list(results[1:]), results[0]

    statuses, times = asyncio.run(main())
    assert all(400 <= s < 500 or s == 200 for s in statuses), statuses
    assert max(times) < 15, f"a normal client waited {max(times):.1f}s behind the attack"
    target.assert_healthy()


def test_after_the_hostile_run_a_burst_of_normal_requests_is_fully_stored(target: Target) -> None:
    ids = []
    for i in range(50):
        response = target.chat(f"burst {i}")
        assert response.status_code == 200
        ids.append(response.headers["x-request-id"])
    target.flush()
    missing = [i for i in ids if target.stored(i) is None]
    assert not missing, f"{len(missing)} of 50 acknowledged requests not stored"
    status: dict[str, Any] = target.client.get("/readyz").json()["record"]
    # No hostile input may have been refused by the store (NUL, huge lines, odd numbers all store).
    assert status["rejected"]["pending"] == 0 and status["rejected"]["set_aside"] == 0, status
    assert status["state"] == "ok", status


@pytest.mark.parametrize(
    "raw",
    [
        b'{"role": "viewer", "expires_at": 1e400}',
        b'{"role": "viewer", "expires_at": -1e400}',
        b'{"role": "viewer", "expires_at": 1e300}',
        b'{"role": "viewer", "expires_in": "99999999999999999999999w"}',
        b'{"role": "viewer", "name": "a\\u0000b", "expires_at": 18446744073709551616}',
    ],
)
def test_admin_key_bodies_with_impossible_times_are_refused(target: Target, raw: bytes) -> None:
    response = target.post("/admin/keys", raw=raw)
    assert response.status_code == 400, response.text
    created = target.post("/admin/keys", {"role": "viewer", "expires_in": "1h"})
    assert created.status_code == 201, created.text
    key_id = created.json()["id"]
    rotated = target.post(f"/admin/keys/{key_id}/rotate", raw=b'{"grace_seconds": 1e400}')
    assert rotated.status_code == 400, rotated.text


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/admin/keys", b'{"role": "viewer", "tenant": "acme\\u0000"}'),
        ("/admin/keys", b'{"role": "viewer", "name": "ops\\u0000key"}'),
        ("/admin/slo/measurements", b'{"slo": "fresh", "value": 1, "tenant": "a\\u0000"}'),
        ("/v1/feedback", b'{"request_id": "r\\u0000", "score": "up"}'),
        ("/v1/feedback", b'{"request_id": "r1", "score": "up", "comment": "ok\\u0000"}'),
        ("/admin/experiments", b'{"name": "e", "alias": "up", "arms": [{"release": "x\\u0000", "weight": 1}]}'),
        # 1,000 deep (orjson reads 1,024): a recursive search for the NUL hit Python's limit, a 500.
        ("/admin/keys", b'{"role": "viewer", "name": ' + b"[" * 1000 + b'"\\u0000"' + b"]" * 1000 + b"}"),
    ],
)
def test_admin_and_feedback_bodies_with_nul_are_refused_on_both_stores(target: Target, path: str, raw: bytes) -> None:
    # PostgreSQL text cannot hold NUL: these were 500s there (and stored on SQLite). A body holding one is
    # refused alike on both stores, before any route reads it.
    response = target.post(path, raw=raw)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_body"
    target.assert_healthy()
