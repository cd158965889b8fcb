"""The gateway in front of an OpenAI-compatible upstream (a real local HTTP server, scripted per test)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

MESSAGES = [{"role": "user", "content": "hi"}]


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


def post(gateway: Gateway, body: dict[str, Any], path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(gateway.url + path, json=body, timeout=30)


def test_non_streaming_pass_through(proxied: Gateway, upstream: FakeUpstream) -> None:
    response = sdk(proxied).chat.completions.create(
        model="up",
        messages=MESSAGES,
        temperature=0.2,
        metadata={"team": "search"},
        user="u-1",  # type: ignore[arg-type]
        extra_body={"top_k": 5},
    )
    assert response.choices[0].message.content == "Hello from upstream"
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["model"] == "real-model"  # the alias is mapped to the deployment's model
    assert sent["body"]["temperature"] == 0.2 and sent["body"]["user"] == "u-1"
    assert sent["body"]["top_k"] == 5  # vendor extensions pass through
    assert "metadata" not in sent["body"]  # gateway-only field
    assert sent["headers"]["Authorization"] == "Bearer sk-upstream-secret"


def test_streaming_pass_through_with_usage(proxied: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script(words=6)
    stream = sdk(proxied).chat.completions.create(
        model="up",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    text, usage = "", None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert text == "".join(f"w{i} " for i in range(6))
    assert usage is not None and usage.completion_tokens == 6


def test_stream_without_usage_asks_upstream_for_it_anyway(proxied: Gateway, upstream: FakeUpstream) -> None:
    response = httpx.post(
        proxied.url + "/v1/chat/completions",
        headers={"x-request-id": "usage-anyway"},
        json={"model": "up", "messages": MESSAGES, "stream": True},
    )
    assert upstream.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert all('"usage"' not in e for e in events[:-1])  # the client did not ask for it
    [record] = proxied.records_for("usage-anyway")
    assert record["completion_tokens"] == 5  # but the record has it


def test_text_completions_and_embeddings(proxied: Gateway, upstream: FakeUpstream) -> None:
    completion = sdk(proxied).completions.create(model="up", prompt="say")
    assert completion.choices[0].text == "Hello from upstream"
    embedding = sdk(proxied).embeddings.create(model="up-embed", input=["a", "b"])
    assert len(embedding.data) == 2 and upstream.requests[-1]["body"]["model"] == "real-embed"


@pytest.mark.parametrize(
    ("upstream_status", "body", "headers", "status", "code"),
    [
        (500, {"error": {"message": "boom"}}, {}, 502, "upstream_error"),
        (502, "bad gateway", {}, 502, "upstream_error"),
        (503, {"error": {"message": "warming up"}}, {"Retry-After": "7"}, 503, "upstream_overloaded"),
        (429, {"error": {"message": "slow down"}}, {"Retry-After": "3"}, 503, "upstream_overloaded"),
        (401, {"error": {"message": "bad key"}}, {}, 502, "upstream_auth_failed"),
        (504, "timeout", {}, 504, "upstream_timeout"),
    ],
)
def test_upstream_failures_become_gateway_errors(
    proxied: Gateway,
    upstream: FakeUpstream,
    upstream_status: int,
    body: Any,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    upstream.script = Script(mode="status", status=upstream_status, body=body, headers=headers)
    response = post(proxied, {"model": "up", "messages": MESSAGES})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["upstream_status"] == upstream_status
    expected_message = body["error"]["message"] if isinstance(body, dict) else body
    assert expected_message in error["message"]  # the upstream's own words are kept
    if "Retry-After" in headers:
        assert response.headers["retry-after"] == headers["Retry-After"]


def test_upstream_rejecting_the_request_stays_a_client_error(proxied: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script(
        mode="status",
        status=400,
        body={"error": {"message": "max_tokens is too large", "param": "max_tokens"}},
    )
    response = post(proxied, {"model": "up", "messages": MESSAGES, "max_tokens": 999999})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens is too large" in response.json()["error"]["message"]


def test_malformed_upstream_json(proxied: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script(mode="malformed")
    response = post(proxied, {"model": "up", "messages": MESSAGES})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_bad_response"


def test_slow_upstream_times_out_with_504(proxied: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script(delay=3.0)  # first_byte timeout is 2 s in this gateway's config
    response = post(proxied, {"model": "up", "messages": MESSAGES})
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"


def test_truncated_stream_is_an_error_event_not_success(proxied: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script(mode="truncate", words=6)
    stream = sdk(proxied).chat.completions.create(
        model="up",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-request-id": "truncated-1"},  # type: ignore[arg-type]
    )
    with pytest.raises(openai.APIError) as failure:
        for _ in stream:
            pass
    assert "before it was complete" in str(failure.value)
    [record] = proxied.records_for("truncated-1")
    assert record["status"] == 502 and "before it was complete" in record["error_message"]
    assert record["output_text"] == "w0 w1 "  # the partial output is kept


def test_error_event_mid_stream(proxied: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script(mode="stream_error", words=6)
    response = httpx.post(
        proxied.url + "/v1/chat/completions", json={"model": "up", "messages": MESSAGES, "stream": True}
    )
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert "upstream exploded" in events[-1] and "[DONE]" not in response.text


def test_stream_that_fails_before_first_byte_is_a_plain_http_error(proxied: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script(mode="status", status=500, body={"error": {"message": "down"}})
    response = httpx.post(
        proxied.url + "/v1/chat/completions", json={"model": "up", "messages": MESSAGES, "stream": True}
    )
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")


def test_unreachable_upstream() -> None:
    from tests.support import free_port

    gateway = start_gateway(
        {
            "models": [
                {
                    "name": "gone",
                    "deployments": [
                        {
                            "type": "openai",
                            "base_url": f"http://127.0.0.1:{free_port()}/v1",
                            "model": "m",
                            "timeouts": {"connect": 1},
                        }
                    ],
                }
            ]
        }
    )
    try:
        response = post(gateway, {"model": "gone", "messages": MESSAGES})
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_unreachable"
    finally:
        gateway.server.stop()


def test_upstream_key_never_logged(proxied: Gateway, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    upstream.script = Script(mode="status", status=401, body={"error": {"message": "invalid key"}})
    response = post(proxied, {"model": "up", "messages": MESSAGES})
    assert "sk-upstream-secret" not in response.text
    assert "sk-upstream-secret" not in caplog.text
    assert "sk-upstream-secret" not in repr(proxied.app.state.gateway.config)
