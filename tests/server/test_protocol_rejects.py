"""Every request the HTTP layer refuses is recorded and counted (outside probe, finding 11).

A request llhttp cannot parse (``Content-Length`` beside ``Transfer-Encoding``, a malformed request line,
a NUL in a header, a bad chunk size) got uvicorn's plain-text 400 and no record, no count; the head
limits' 431 and 408 neither. These tests talk HTTP/1.1 by hand over loopback to a gateway served by
uvicorn with ``serve``'s protocol, in a thread and as a real ``opsgate serve`` process. Each test sends
from its own loopback address (127.0.0.N), so the per-address record limits of one do not touch another.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from opsgate.domain.config import parse_config
from opsgate.pipeline.record import MemorySink
from opsgate.server.app import create_app
from opsgate.server.http_limits import http_protocol
from opsgate.server.protocol_rejects import RejectLog, classify, client_key, printable
from tests.server.test_header_limits import _closed, _response, _send_all_or_reset
from tests.support import free_port, isolated, serve_process, wait_until

MAX_HEAD = 20 * 1024
HEAD_TIMEOUT = 1.0
FLUSH = 0.5
CONFIG = {
    "models": [{"name": "up", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}]}]
}

CL_TE = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: probe-11\r\nContent-Type: application/json\r\n"
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
)


class _Gateway:
    """The gateway app under uvicorn with ``serve``'s protocol, in a thread; its records in a MemorySink."""

    def __init__(self, loop: str) -> None:
        self.sink = MemorySink(10_000)
        self.app = create_app(isolated(parse_config(CONFIG)), sink=self.sink)
        # The protocol makes one on its first refusal; made here to flush summaries within a test's patience.
        self.rejects = RejectLog.for_gateway(self.app.state.gateway, flush_seconds=FLUSH)
        self.app.state.protocol_rejects = self.rejects
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                loop=loop,
                http=http_protocol(MAX_HEAD, HEAD_TIMEOUT),
                log_level="warning",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def records(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in list(self.sink.records) if all(_field(r, k) == v for k, v in match.items())]

    def record(self, record_id: str) -> dict[str, Any]:
        assert wait_until(lambda: bool(self.records(id=record_id)), 10), f"no record {record_id}"
        return self.records(id=record_id)[0]

    def http_count(self, status: str) -> float:
        """``opsgate_requests_total{endpoint="http", status=...}`` from /metrics."""
        return _metric(httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=20).text, status)


def _field(record: dict[str, Any], key: str) -> Any:
    if key.startswith("tags."):
        return (record.get("tags") or {}).get(key[5:])
    return record.get(key)


def _metric(text: str, status: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("opsgate_requests_total{") and 'endpoint="http"' in line and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def gateway(request: pytest.FixtureRequest) -> Iterator[_Gateway]:
    started = _Gateway(request.param)
    yield started
    started.stop()


_addresses = iter(range(2, 250))


@pytest.fixture()
def source() -> str:
    """A loopback address of this test's own (Linux routes all of 127/8 to lo)."""
    return f"127.0.0.{next(_addresses)}"


def _connect(port: int, source: str, timeout: float = 20.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def _refused(port: int, source: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends ``data`` on a new connection; the answer, after checking the server closed the connection."""
    with _connect(port, source) as sock:
        _send_all_or_reset(sock, data)
        answer = _response(sock)
        assert _closed(sock)
    return answer


def _openai_error(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"] == "application/json"
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_http")
    return dict(error)


# Each kind of refusal: answered, recorded, counted


def test_content_length_with_transfer_encoding_is_an_openai_400_recorded_and_counted(
    gateway: _Gateway, source: str
) -> None:
    """Finding 11: uvicorn's plain-text 400, in neither the request log nor /metrics."""
    before = gateway.http_count("400")
    status, headers, body = _refused(gateway.port, source, CL_TE)
    assert status == 400
    assert "Content-Length" in _openai_error(headers, body)["message"]
    record = gateway.record(headers["x-request-id"])
    assert record["status"] == 400
    assert (record["endpoint"], record["error_type"]) == ("http", "invalid_http")
    assert record["error_message"] == "Transfer-Encoding can't be present with Content-Length"
    assert record["client_request_id"] == "probe-11"
    tags = record["tags"]
    assert (tags["client"], tags["reason"], tags["method"], tags["path"]) == (
        source,
        "conflicting_length",
        "POST",
        "/v1/chat/completions",
    )
    assert isinstance(tags["client_port"], int)
    assert gateway.http_count("400") == before + 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GARBAGE\r\n\r\n", "invalid_method"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "invalid_method"),  # TLS to the plain port
        (b"GET / HTTP/9.x\r\n\r\n", "invalid_version"),
        (b"GET /a\x01b HTTP/1.1\r\n\r\n", "invalid_url"),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "invalid_header"),
        (b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", "invalid_header"),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "invalid_content_length"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "invalid_transfer_encoding"),
        (b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n", "invalid_url"),
    ],
)
def test_malformed_heads_are_recorded_with_their_reason(
    gateway: _Gateway, source: str, data: bytes, reason: str
) -> None:
    status, headers, body = _refused(gateway.port, source, data)
    assert status == 400
    _openai_error(headers, body)
    record = gateway.record(headers["x-request-id"])
    assert (record["status"], record["error_type"], record["tags"]["reason"]) == (400, "invalid_http", reason)
    assert record["tags"]["client"] == source


def _bad_chunk_while_read(port: int, source: str, path: bytes) -> tuple[int, dict[str, str], bytes]:
    """A chunked POST whose second chunk size is garbage, sent once the app is reading the body."""
    with _connect(port, source) as sock:
        sock.sendall(
            b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n'
        )
        time.sleep(0.2)  # the app is reading the body now
        sock.sendall(b"zz\r\n")
        answer = _response(sock)
        assert _closed(sock)
    return answer


def test_a_bad_chunk_in_an_inference_body_is_recorded_once_as_the_400_the_client_got(
    gateway: _Gateway, source: str
) -> None:
    # The route was reading the body when the parser refused it: the route saw a disconnect, and recorded
    # the request as a 499 (client gone) beside the HTTP layer's own record. Now one record, the route's
    # (with its endpoint), under the id the client was given, saying what the client was sent.
    disconnects = len(gateway.records(endpoint="embedding", status=499))
    before = gateway.http_count("400")
    status, headers, body = _bad_chunk_while_read(gateway.port, source, b"/v1/embeddings")
    assert status == 400
    _openai_error(headers, body)
    record = gateway.record(headers["x-request-id"])
    assert (record["endpoint"], record["status"], record["error_type"]) == ("embedding", 400, "invalid_http")
    assert "chunk" in record["error_message"].lower()
    time.sleep(0.5)  # a second record would have been written by now (the route answers at once)
    assert len(gateway.records(id=headers["x-request-id"])) == 1
    assert len(gateway.records(endpoint="embedding", status=499)) == disconnects
    assert gateway.http_count("400") == before  # counted once, as the route's request


def test_a_bad_chunk_in_another_routes_body_is_recorded_with_the_head_the_app_had(
    gateway: _Gateway, source: str
) -> None:
    # No route but the inference ones records its requests: the HTTP layer does, with the app's head.
    status, headers, body = _bad_chunk_while_read(gateway.port, source, b"/admin/evals/datasets")
    assert status == 400
    _openai_error(headers, body)
    record = gateway.record(headers["x-request-id"])
    tags = record["tags"]
    assert record["endpoint"] == "http"
    assert (tags["reason"], tags["method"], tags["path"], tags["dispatched"]) == (
        "invalid_chunk",
        "POST",
        "/admin/evals/datasets",
        True,
    )


@pytest.mark.parametrize(
    ("method", "path", "status", "error_type", "reason"),
    [
        ("POST", "/v1/responses", 404, "not_found", "unknown_route"),  # an SDK's newer API
        ("GET", "/v1/chat/completions", 405, "method_not_allowed", "method_not_allowed"),
        ("GET", "/v1/%ff%fe/x", 404, "not_found", "unknown_route"),  # broken UTF-8
        ("GET", "/v1/responses%00", 400, "invalid_url", "invalid_url"),  # NUL: refused before any route
    ],
)
def test_a_route_the_gateway_lacks_is_recorded_with_an_id(
    gateway: _Gateway, source: str, method: str, path: str, status: int, error_type: str, reason: str
) -> None:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=20) as client:
        response = client.request(
            method, f"http://127.0.0.1:{gateway.port}{path}", json={"model": "up"}, headers={"x-request-id": "mine-1"}
        )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == error_type
    record = gateway.record(response.headers["x-request-id"])
    assert (record["status"], record["error_type"], record["tags"]["reason"]) == (status, error_type, reason)
    tags = record["tags"]
    assert (tags["method"], tags["client"], record["client_request_id"]) == (method, source, "mine-1")
    assert tags["path"].isprintable() and tags["path"].isascii()


def test_a_head_too_large_is_recorded_and_counted(gateway: _Gateway, source: str) -> None:
    before = gateway.http_count("4xx")  # 431 has no label of its own
    for data in (
        b"GET /one HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * (MAX_HEAD + 100) + b"\r\n\r\n",  # complete, in one read
        b"GET /two HTTP/1.1\r\nHost: x\r\nX-Flood: " + b"a" * (1 << 20),  # still open
    ):
        status, headers, body = _refused(gateway.port, source, data)
        assert (status, orjson.loads(body)["error"]["code"]) == (431, "request_header_fields_too_large")
        record = gateway.record(headers["x-request-id"])
        assert (record["status"], record["error_type"], record["tags"]["reason"]) == (
            431,
            "invalid_http",
            "head_too_large",
        )
        assert record["tags"]["client"] == source
    assert gateway.http_count("4xx") == before + 2


def test_a_head_timeout_is_recorded_and_counted(gateway: _Gateway, source: str) -> None:
    before = gateway.http_count("408")
    with _connect(gateway.port, source, timeout=30) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-A: a")
        status, headers, body = _response(sock)
        assert _closed(sock)
    assert (status, orjson.loads(body)["error"]["code"]) == (408, "request_timeout")
    record = gateway.record(headers["x-request-id"])
    assert (record["status"], record["tags"]["reason"], record["tags"]["path"]) == (408, "head_timeout", "/slow")
    assert record["latency_ms"] >= HEAD_TIMEOUT * 900
    assert gateway.http_count("408") == before + 1


def test_a_connection_that_sends_nothing_is_no_request(gateway: _Gateway, source: str) -> None:
    with _connect(gateway.port, source, timeout=30) as sock:
        assert sock.recv(100) == b""  # closed after the head timeout, without an answer
    assert not gateway.records(**{"tags.client": source})


# What the client sent is bounded and cleaned before it is stored


def test_attacker_bytes_are_stored_bounded_and_printable(gateway: _Gateway, source: str) -> None:
    # llhttp itself refuses control and non-ASCII bytes in a URL; what reaches the record is its length,
    # the parser's repr of a target it could not take apart, and the client's X-Request-Id.
    data = b"GET http://[" + b"a" * 10_000 + b" HTTP/1.1\r\nX-Request-Id: a\xff\xfeb\r\n\r\n"
    status, headers, body = _refused(gateway.port, source, data)
    assert status == 400
    assert _openai_error(headers, body)["message"] == "Invalid HTTP request: the request target cannot be parsed."
    record = gateway.record(headers["x-request-id"])
    assert record["tags"]["reason"] == "invalid_url"
    assert record["client_request_id"] is None  # not a sane id: not kept
    for text, limit in ((record["error_message"], 300), (record["tags"]["path"], 200)):
        assert 100 < len(text) <= limit
        assert text.endswith("...")
        assert re.fullmatch(r"[\x20-\x7e]*", text), text


def test_printable() -> None:
    assert printable(b"a\x00b\xff\xfe\n\x1b[31m", 100) == "a\\x00b\\xff\\xfe\\x0a\\x1b[31m"
    assert printable("évil\u202e\x00", 100) == "\\xe9vil\\u202e\\x00"
    huge = printable(b"x" * 1_000_000, 50)
    assert huge is not None and len(huge) == 50 and huge.endswith("...")
    assert printable(None, 10) is None


def test_client_key() -> None:
    assert client_key("10.1.2.3") == "10.1.2.3"
    assert client_key("2001:db8:1:2:3:4:5:6") == client_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert client_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert client_key(None) == "unknown"


def test_a_failing_callback_that_is_not_the_clients_fault_is_a_500() -> None:
    import httptools

    error = httptools.HttpParserCallbackError("User callback error")
    error.__context__ = KeyError("a bug of ours")
    assert classify(error)[:2] == (500, "internal_error")
    error.__context__ = httptools.HttpParserInvalidURLError("invalid url b'http://['")
    assert classify(error)[:2] == (400, "invalid_url")


# Pipelining: a refused request after a good one is answered after it


def test_a_malformed_request_pipelined_after_a_good_one_is_answered_after_it(gateway: _Gateway, source: str) -> None:
    """uvicorn wrote its 400 at once, ahead of the good request's answer (which then went nowhere)."""
    with _connect(gateway.port, source) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE / HTTP/1.1\r\n\r\n")
        first = _response(sock)
        second = _response(sock)
        assert _closed(sock)
    assert (first[0], orjson.loads(first[2])) == (200, {"status": "ok"})
    assert second[0] == 400
    _openai_error(second[1], second[2])


# Floods


def test_a_flood_is_counted_whole_recorded_at_a_bounded_rate_and_others_still_recorded(
    gateway: _Gateway, source: str
) -> None:
    flood = 300
    other = f"127.0.1.{source.rsplit('.', 1)[1]}"
    before = gateway.http_count("400")
    started = time.monotonic()
    for _ in range(flood):
        status, headers, _ = _refused(gateway.port, source, b"GARBAGE\r\n\r\n")
        assert status == 400
    refill = int(time.monotonic() - started) + 1  # records the address's rate (1/s) allowed meanwhile
    # Another address, right after: recorded on its own; and normal requests are served.
    status, headers, _ = _refused(gateway.port, other, CL_TE)
    assert gateway.record(headers["x-request-id"])["tags"]["client"] == other
    assert httpx.get(f"http://127.0.0.1:{gateway.port}/healthz", timeout=20).status_code == 200

    assert gateway.http_count("400") == before + flood + 1  # the metric counts every one
    one_by_one = gateway.records(**{"tags.client": source, "tags.aggregated": None})
    assert 10 <= len(one_by_one) <= 10 + refill  # the address's burst, plus its rate over the flood

    def summarised() -> int:
        summaries = [r for r in gateway.records(**{"tags.client": source}) if r["tags"].get("aggregated")]
        return sum(r["tags"]["aggregated"] for r in summaries)

    # The rest in summary records: every refusal is in the log, one by one or counted.
    assert wait_until(lambda: len(one_by_one) + summarised() == flood, 30), (len(one_by_one), summarised())
    summary = next(r for r in gateway.records(**{"tags.client": source}) if r["tags"].get("aggregated"))
    assert (summary["status"], summary["error_type"], summary["endpoint"]) == (400, "invalid_http", "http")
    assert summary["tags"]["reasons"] == {"invalid_method": summary["tags"]["aggregated"]}


def test_records_per_address_and_overall_are_bounded() -> None:
    """Past the address's burst, and past the overall burst across addresses, refusals are aggregated."""
    from opsgate.server.protocol_rejects import ProtocolReject

    async def run() -> None:
        sink = MemorySink()
        now = [0.0]
        rejects = RejectLog(
            sink,
            None,
            client_burst=3,
            client_rate=1.0,
            total_burst=5,
            total_rate=1.0,
            max_clients=4,
            clock=lambda: now[0],
        )
        first = [rejects.add(ProtocolReject(400, "malformed", "m", ("10.0.0.1", 1))) for _ in range(10)]
        # Three recorded one by one; the seven past the burst share the id their summary will have.
        assert len(set(first[:3])) == 3 and len(set(first[3:])) == 1 and first[3] not in first[:3]
        second = [rejects.add(ProtocolReject(400, "malformed", "m", (f"10.0.1.{n}", 1))) for n in range(10)]
        assert len(set(second[:2])) == 2  # the overall burst (5) is spent after two more
        assert rejects.status()["clients"] == 5  # four addresses and the shared bucket past them
        rejects.flush()
        aggregated = sum(r["tags"].get("aggregated", 0) for r in sink.records)
        assert aggregated + 5 == 20
        # Every refusal's answer quoted the id of a record that holds it: its own, or its summary's.
        written = {r["id"]: r for r in sink.records}
        for request_id in first + second:
            assert request_id in written, request_id
        assert written[first[3]]["tags"]["aggregated"] == 7
        now[0] += 100.0
        assert rejects.add(ProtocolReject(400, "malformed", "m", ("10.0.0.1", 1))) is not None
        now[0] += 100.0
        rejects.flush()
        assert rejects.status() == {"refused": 21, "recorded": 6, "aggregated": 15, "summaries": 3, "clients": 0}

    asyncio.run(run())


def test_addresses_past_the_summary_cap_are_listed_in_the_last_summary() -> None:
    from opsgate.server.protocol_rejects import MAX_MERGED_IDS, MAX_SUMMARIES, ProtocolReject

    async def run() -> None:
        sink = MemorySink()
        rejects = RejectLog(
            sink, None, client_burst=1, client_rate=0.001, total_burst=10_000, max_clients=4096, clock=lambda: 0.0
        )
        answered: dict[str, str | None] = {}
        extra = MAX_MERGED_IDS + 44  # past one record's list of ids (review: those ids found no record)
        for n in range(MAX_SUMMARIES + extra):
            host = f"10.1.{n // 250}.{n % 250}"
            rejects.add(ProtocolReject(400, "malformed", "m", (host, 1)))  # recorded on its own
            answered[host] = rejects.add(ProtocolReject(400, "malformed", "m", (host, 1)))  # aggregated
        rejects.flush()
        summaries = {r["id"]: r for r in sink.records if r["tags"].get("aggregated")}
        assert len(summaries) == MAX_SUMMARIES + 1
        listed = {i for r in sink.records for i in r["tags"].get("request_ids", [])}
        assert len(listed) == extra
        continued = [r for r in sink.records if r["tags"].get("continues")]
        assert continued and all(r["error_type"] == "summary_continuation" for r in continued)
        assert sum(r["tags"].get("aggregated", 0) for r in sink.records) == MAX_SUMMARIES + extra
        for host, request_id in answered.items():
            assert request_id is not None and (request_id in summaries or request_id in listed), host

    asyncio.run(run())


# The real process


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    directory = tmp_path_factory.mktemp("serve")
    path = directory / "config.yaml"
    store = directory / "records.db"
    path.write_text(
        "models:\n  - name: up\n    deployments:\n      - {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
        f"record: {{store: 'sqlite:///{store}', journal_dir: '{directory / 'journal'}'}}\n"
    )
    with serve_process(path, log=directory / "serve.log", timeout=120) as (_, url):
        yield int(url.rsplit(":", 1)[1]), store


def test_serve_records_and_counts_a_content_length_with_transfer_encoding(
    served: tuple[int, Path], source: str
) -> None:
    port, store = served
    status, headers, body = _refused(port, source, CL_TE)
    assert status == 400
    _openai_error(headers, body)
    record_id = headers["x-request-id"]

    def stored() -> tuple[Any, ...] | None:
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
                row: tuple[Any, ...] | None = conn.execute(
                    "SELECT status, endpoint, error_type, tags FROM requests WHERE id = ?", (record_id,)
                ).fetchone()
                return row
        except sqlite3.OperationalError:  # not created yet
            return None

    assert wait_until(lambda: stored() is not None, 30), "the refusal never reached the request log"
    row = stored()
    assert row is not None and row[:3] == (400, "http", "invalid_http")
    tags = orjson.loads(row[3])
    assert (tags["client"], tags["reason"]) == (source, "conflicting_length")
    assert _metric(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=20).text, "400") >= 1


def test_two_workers_record_and_count_every_refusal(tmp_path: Path, source: str) -> None:
    """Each worker process finds its own gateway; /metrics sums both workers' counts."""
    path = tmp_path / "config.yaml"
    store = tmp_path / "records.db"
    path.write_text(
        "models:\n  - name: up\n    deployments:\n      - {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
        f"record: {{store: 'sqlite:///{store}', journal_dir: '{tmp_path / 'journal'}'}}\n"
    )
    sent = 10
    with serve_process(path, tmp_path / "serve.log", ["--workers", "2"], 120) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        ids = {_refused(port, source, CL_TE)[1]["x-request-id"] for _ in range(sent)}
        assert len(ids) == sent

        def counted() -> float:
            return _metric(httpx.get(url + "/metrics", headers={"connection": "close"}, timeout=20).text, "400")

        assert wait_until(lambda: counted() == sent, 30), counted()

        def stored() -> int:
            try:
                with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
                    marks = ",".join("?" * len(ids))
                    query = f"SELECT count(*) FROM requests WHERE error_type = 'invalid_http' AND id IN ({marks})"
                    return int(conn.execute(query, sorted(ids)).fetchone()[0])
            except sqlite3.OperationalError:
                return 0

        assert wait_until(lambda: stored() == sent, 30), stored()
