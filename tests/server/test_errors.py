"""Every client mistake is a 4xx in the OpenAI error shape with ``param`` set where a field is at fault."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.support import Gateway

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


def assert_error_shape(
    response: httpx.Response, status: int, param: str | None, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


BAD_BODIES = [
    # (body, status, param, code)
    ({"messages": OK_MESSAGES}, 400, "model", "missing_required"),
    ({"model": "smollm2"}, 400, "messages", "missing_required"),
    ({"model": "smollm2", "messages": []}, 400, "messages", "invalid_value"),
    (
        {"model": "smollm2", "messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages[0].role",
        "invalid_value",
    ),
    ({"model": "smollm2", "messages": [{"content": "x"}]}, 400, "messages[0].role", "missing_required"),
    ({"model": "smollm2", "messages": OK_MESSAGES, "temperature": 3}, 400, "temperature", "invalid_value"),
    (
        {"model": "smollm2", "messages": OK_MESSAGES, "temperature": "hot"},
        400,
        "temperature",
        "invalid_value",
    ),
    ({"model": "smollm2", "messages": OK_MESSAGES, "top_p": -0.1}, 400, "top_p", "invalid_value"),
    ({"model": "smollm2", "messages": OK_MESSAGES, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    (
        {"model": "smollm2", "messages": OK_MESSAGES, "max_completion_tokens": -5},
        400,
        "max_completion_tokens",
        "invalid_value",
    ),
    ({"model": "smollm2", "messages": OK_MESSAGES, "n": 2}, 400, "n", "invalid_value"),
    (
        {"model": "smollm2", "messages": OK_MESSAGES, "stop": ["a", "b", "c", "d", "e"]},
        400,
        "stop",
        "invalid_value",
    ),
    ({"model": "smollm2", "messages": OK_MESSAGES, "stream": "yes please"}, 400, "stream", "invalid_value"),
    (
        {"model": "smollm2", "messages": OK_MESSAGES, "stream_options": {"include_usage": True}},
        400,
        None,
        "invalid_value",
    ),
    ({"model": "smollm2", "messages": OK_MESSAGES, "top_logprobs": 2}, 400, None, "invalid_value"),
    (
        {"model": "smollm2", "messages": OK_MESSAGES, "logprobs": True, "top_logprobs": 50},
        400,
        "top_logprobs",
        "invalid_value",
    ),
    (
        {"model": "smollm2", "messages": OK_MESSAGES, "response_format": {"type": "xml"}},
        400,
        "response_format.type",
        "invalid_value",
    ),
    ({"model": "no-such-model", "messages": OK_MESSAGES}, 404, "model", "model_not_found"),
    ({"model": "all-minilm-l6-v2", "messages": OK_MESSAGES}, 400, "model", "wrong_model_kind"),
    ({"model": 42, "messages": OK_MESSAGES}, 400, "model", "invalid_value"),
]


@pytest.mark.parametrize(("body", "status", "param", "code"), BAD_BODIES)
def test_bad_chat_bodies(embedded: Gateway, body: dict[str, Any], status: int, param: str | None, code: str) -> None:
    response = httpx.post(embedded.url + CHAT, json=body)
    assert_error_shape(response, status, param, code)
    assert response.headers.get("x-request-id")


def test_bad_json(embedded: Gateway) -> None:
    response = httpx.post(
        embedded.url + CHAT,
        content=b'{"model": "smollm2", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert_error_shape(response, 400, None, "invalid_json")


def test_body_not_an_object(embedded: Gateway) -> None:
    response = httpx.post(embedded.url + CHAT, json=[1, 2, 3])
    assert_error_shape(response, 400, None, "invalid_body")


def test_empty_body(embedded: Gateway) -> None:
    response = httpx.post(embedded.url + CHAT, content=b"", headers={"content-type": "application/json"})
    assert_error_shape(response, 400, None, "invalid_json")


def test_wrong_content_type(embedded: Gateway) -> None:
    response = httpx.post(
        embedded.url + CHAT,
        content=b"model=smollm2",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_error_shape(response, 415, None, "unsupported_media_type")


def test_body_too_large(embedded: Gateway) -> None:
    huge = "x" * (5 * 1024 * 1024)
    response = httpx.post(
        embedded.url + CHAT, json={"model": "smollm2", "messages": [{"role": "user", "content": huge}]}
    )
    assert_error_shape(response, 413, None, "body_too_large")


def test_body_too_large_chunked(embedded: Gateway) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"model": "smollm2", "messages": [{"role": "user", "content": "'
        for _ in range(6):
            yield b"y" * (1024 * 1024)
        yield b'"}]}'

    response = httpx.post(embedded.url + CHAT, content=chunks(), headers={"content-type": "application/json"})
    assert_error_shape(response, 413, None, "body_too_large")


def test_prompt_longer_than_context(embedded: Gateway) -> None:
    long_text = "word " * 3000  # about 3000 tokens against a 2048-token context
    response = httpx.post(
        embedded.url + CHAT, json={"model": "smollm2", "messages": [{"role": "user", "content": long_text}]}
    )
    assert_error_shape(response, 400, "messages", "context_length_exceeded")
    streamed = httpx.post(
        embedded.url + CHAT,
        json={"model": "smollm2", "stream": True, "messages": [{"role": "user", "content": long_text}]},
    )
    assert_error_shape(streamed, 400, "messages", "context_length_exceeded")


def test_unknown_route_and_method(embedded: Gateway) -> None:
    assert httpx.get(embedded.url + "/v1/nothing").json()["error"]["code"] == "not_found"
    response = httpx.get(embedded.url + CHAT)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_unknown_model_retrieve(embedded: Gateway) -> None:
    response = httpx.get(embedded.url + "/v1/models/nope")
    assert_error_shape(response, 404, "model", "model_not_found")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "all-minilm-l6-v2", "input": []}, "input"),
        ({"model": "all-minilm-l6-v2", "input": [""]}, "input"),
        ({"model": "all-minilm-l6-v2", "input": [[1, 2, 3]]}, "input"),
        ({"model": "all-minilm-l6-v2", "input": "x", "dimensions": 100}, "dimensions"),
        ({"model": "all-minilm-l6-v2"}, "input"),
        ({"model": "smollm2", "input": "x"}, "model"),
        ({"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_bad_embedding_bodies(embedded: Gateway, body: dict[str, Any], param: str) -> None:
    response = httpx.post(embedded.url + "/v1/embeddings", json=body)
    assert_error_shape(response, 400, param)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "smollm2", "prompt": ["a", "b"]}, "prompt"),
        ({"model": "smollm2", "prompt": "a", "logprobs": 9}, "logprobs"),
        ({"model": "smollm2", "prompt": "a", "suffix": "z"}, "suffix"),
    ],
)
def test_bad_completion_bodies(embedded: Gateway, body: dict[str, Any], param: str) -> None:
    response = httpx.post(embedded.url + "/v1/completions", json=body)
    assert_error_shape(response, 400, param)


def test_sdk_raises_typed_errors(embedded: Gateway) -> None:
    client = openai.OpenAI(base_url=embedded.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="missing", messages=OK_MESSAGES)  # type: ignore[arg-type]
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="smollm2", messages=OK_MESSAGES, temperature=5)  # type: ignore[arg-type]
    assert bad.value.param == "temperature"


def test_failed_requests_are_recorded(embedded: Gateway) -> None:
    response = httpx.post(
        embedded.url + CHAT,
        json={"model": "nope", "messages": OK_MESSAGES},
        headers={"x-request-id": "bad-model-test-1"},
    )
    # The record's id is the gateway's (echoed in the header); the client's id is kept beside it.
    assert response.headers["x-request-id"] != "bad-model-test-1"
    [record] = embedded.records_for(response.headers["x-request-id"])
    assert record["client_request_id"] == "bad-model-test-1"
    assert record["status"] == 404 and record["error_type"] == "invalid_request_error"


def test_openapi_document(embedded: Gateway) -> None:
    spec = httpx.get(embedded.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"} <= set(spec["paths"])
    assert "ChatCompletionRequest" in spec["components"]["schemas"]


def test_health_and_readiness(embedded: Gateway) -> None:
    assert httpx.get(embedded.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(embedded.url + "/readyz").json()
    assert ready["status"] == "ready"
    assert ready["deployments"]["smollm2#0"]["ready"] is True
    assert ready["pipeline"] == ["request_id", "record", "record_admission", "validation", "release", "backend"]
