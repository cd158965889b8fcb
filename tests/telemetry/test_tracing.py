"""Traces reach a real OTLP/HTTP receiver with the GenAI attributes and the right parent/child shape."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import upstream_config
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway
from tests.telemetry.otlp_receiver import OtlpReceiver, ReceivedSpan

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    server.stop()


def traced_config(upstream: FakeUpstream, receiver: OtlpReceiver, **tracing: Any) -> dict[str, Any]:
    config = upstream_config(upstream.base_url, timeouts={"first_byte": 2, "total": 5})
    config["models"][0]["routing"] = {"retries": 1, "backoff_initial": 0}
    config["models"][0]["price"] = {"input_per_million": 1.0, "output_per_million": 2.0}
    config["cache"] = {"enabled": True}  # a stage with a span of its own
    tracing = {"sample_ratio": 1.0, **tracing}  # every trace: these tests look at each request's spans
    config["telemetry"] = {"tracing": {"otlp_endpoint": receiver.endpoint, "export_interval_ms": 50, **tracing}}
    return config


@pytest.fixture(scope="module")
def traced(upstream_server: FakeUpstream, receiver: OtlpReceiver) -> Iterator[Gateway]:
    gateway = start_gateway(traced_config(upstream_server, receiver))
    yield gateway
    gateway.server.stop()


def server_span(receiver: OtlpReceiver, trace_id: str) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The request's SERVER span and every span of its trace (waiting until the server span is in)."""
    deadline = time.monotonic() + 10
    while True:
        spans = receiver.trace(trace_id)
        servers = [s for s in spans if s.kind == "SERVER"]
        if servers or time.monotonic() > deadline:
            assert len(servers) == 1, f"expected one server span in {spans}"
            time.sleep(0.2)  # let any span exported in the same breath arrive too
            return servers[0], receiver.trace(trace_id)
        time.sleep(0.05)


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_id == parent.span_id]


def assert_no_deprecated(span: ReceivedSpan) -> None:
    for key in span.attributes:
        assert not key.startswith("gen_ai.system"), key
        assert "prompt_tokens" not in key and "completion_tokens" not in key, key


def test_chat_span_has_genai_attributes_and_honours_traceparent(
    traced: Gateway, receiver: OtlpReceiver, upstream: FakeUpstream
) -> None:
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    response = httpx.post(
        traced.base_url + "/chat/completions",
        json={
            "model": "up",
            "messages": [{"role": "user", "content": "secret question"}],
            "max_tokens": 20,
            "temperature": 0.3,
            "top_p": 0.9,
        },
        headers={"traceparent": traceparent, "x-request-id": "trace-json-1"},
    )
    assert response.status_code == 200
    assert response.headers["x-opsgate-trace-id"] == CALLER_TRACE
    (record,) = traced.records_for("trace-json-1")
    assert record["tags"]["trace_id"] == CALLER_TRACE

    server, spans = server_span(receiver, CALLER_TRACE)
    assert server.parent_id == CALLER_SPAN
    assert server.name == "chat up"
    assert server.service == "opsgate"
    attrs = server.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "up"
    assert attrs["gen_ai.response.model"] == "real-model"
    assert attrs["gen_ai.request.max_tokens"] == 20
    assert attrs["gen_ai.request.temperature"] == pytest.approx(0.3)
    assert attrs["gen_ai.request.top_p"] == pytest.approx(0.9)
    assert attrs["gen_ai.usage.input_tokens"] == 7
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.response.id"] == "up-1"
    assert attrs["http.response.status_code"] == 200
    assert "error.type" not in attrs
    # Content only when the operator opts in.
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs
    assert all("secret question" not in str(v) for s in spans for v in s.attributes.values())
    assert_no_deprecated(server)

    # Stages that do real work get a span; trivial ones (validation, record) do not.
    assert {s.name for s in children(spans, server)} == {"opsgate.release", "opsgate.cache", "chat real-model"}
    (cache,) = [s for s in spans if s.name == "opsgate.cache"]
    assert cache.kind == "INTERNAL"
    (attempt,) = [s for s in children(spans, server) if s.kind == "CLIENT"]
    assert attempt.kind == "CLIENT"
    assert attempt.name == "chat real-model"
    assert attempt.attributes["gen_ai.request.model"] == "real-model"
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["opsgate.deployment"] == record["deployment"]
    assert_no_deprecated(attempt)
    assert receiver.content_types and all(t == "application/x-protobuf" for t in receiver.content_types)


def test_stream_span_ends_with_the_stream(traced: Gateway, receiver: OtlpReceiver, upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=traced.base_url, api_key="sk-test", max_retries=0)
    stream = client.chat.completions.with_raw_response.create(
        model="up", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    trace_id = stream.headers["x-opsgate-trace-id"]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream.parse() if chunk.choices)
    assert text == "w0 w1 w2 w3 w4 "

    server, spans = server_span(receiver, trace_id)
    attrs = server.attributes
    assert server.parent_id == ""  # no traceparent: a new trace
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["gen_ai.usage.input_tokens"] == 7
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["http.response.status_code"] == 200
    assert attrs["opsgate.time_to_first_token_ms"] > 0
    (attempt,) = [s for s in spans if s.kind == "CLIENT"]
    assert attempt.trace_id == trace_id


def test_failed_attempt_then_retry(traced: Gateway, receiver: OtlpReceiver, upstream: FakeUpstream) -> None:
    upstream.script = Script(mode="status", status=500, body={"error": {"message": "boom"}}, fail_first=1)
    response = httpx.post(
        traced.base_url + "/chat/completions",
        json={"model": "up", "messages": [{"role": "user", "content": "retry me"}]},
    )
    assert response.status_code == 200
    assert len(upstream.requests) == 2
    server, spans = server_span(receiver, response.headers["x-opsgate-trace-id"])
    attempts = sorted((s for s in spans if s.kind == "CLIENT"), key=lambda s: s.attributes["opsgate.attempt"])
    assert [a.attributes["opsgate.attempt"] for a in attempts] == [0, 1]
    assert attempts[0].status_code == 2 and attempts[0].attributes["error.type"]
    assert attempts[1].status_code != 2 and "error.type" not in attempts[1].attributes
    assert all(a.parent_id == server.span_id for a in attempts)
    assert server.status_code != 2


def test_failed_request_sets_error_type(traced: Gateway, receiver: OtlpReceiver, upstream: FakeUpstream) -> None:
    upstream.script = Script(mode="status", status=500, body={"error": {"message": "down"}})
    response = httpx.post(
        traced.base_url + "/chat/completions", json={"model": "up", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 502
    assert response.json()["error"]["type"]  # the OpenAI error shape
    server, spans = server_span(receiver, response.headers["x-opsgate-trace-id"])
    assert server.status_code == 2
    assert server.attributes["http.response.status_code"] == 502
    assert server.attributes["error.type"]
    assert len([s for s in spans if s.kind == "CLIENT"]) == 2  # retries: 1


def test_content_only_when_opted_in(upstream_server: FakeUpstream, receiver: OtlpReceiver) -> None:
    upstream_server.script = Script()
    gateway = start_gateway(traced_config(upstream_server, receiver, capture_content=True, stage_spans=False))
    try:
        response = httpx.post(
            gateway.base_url + "/chat/completions",
            json={"model": "up", "messages": [{"role": "user", "content": "opted in"}]},
        )
        assert response.status_code == 200
        server, spans = server_span(receiver, response.headers["x-opsgate-trace-id"])
        assert '"content": "opted in"' in server.attributes["gen_ai.input.messages"]
        assert "Hello from upstream" in server.attributes["gen_ai.output.messages"]
        # Without stage spans: no cache span, only the request and its attempt.
        assert {s.name for s in spans} == {"chat up", "chat real-model"}
        (attempt,) = [s for s in spans if s.kind == "CLIENT"]
        assert attempt.parent_id == server.span_id
    finally:
        gateway.server.stop()


def test_untraced_gateway_sends_no_trace_header(proxied: Gateway, upstream: FakeUpstream) -> None:
    response = httpx.post(
        proxied.base_url + "/chat/completions", json={"model": "up", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 200
    assert "x-opsgate-trace-id" not in response.headers


def test_unsampled_requests_keep_a_trace_id(upstream_server: FakeUpstream, receiver: OtlpReceiver) -> None:
    upstream_server.script = Script()
    gateway = start_gateway(traced_config(upstream_server, receiver, sample_ratio=0.0))
    try:
        body = {"model": "up", "messages": [{"role": "user", "content": "not sampled"}]}
        response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers={"x-request-id": "unsampled"})
        assert response.status_code == 200
        trace_id = response.headers["x-opsgate-trace-id"]
        assert len(trace_id) == 32 and int(trace_id, 16) != 0
        (record,) = gateway.records_for("unsampled")
        assert record["tags"]["trace_id"] == trace_id
        # A caller that sampled its trace gets the spans whatever the ratio.
        caller = "0af7651916cd43dd8448eb211c80319c"
        headers = {"traceparent": f"00-{caller}-b7ad6b7169203331-01"}
        body = {"model": "up", "messages": [{"role": "user", "content": "sampled upstream"}]}
        response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers)
        assert response.headers["x-opsgate-trace-id"] == caller
        server, _ = server_span(receiver, caller)
        assert server.parent_id == "b7ad6b7169203331"
        assert receiver.trace(trace_id, timeout=0.5) == []
    finally:
        gateway.server.stop()
