"""The upstream backend's serialisation: client data it cannot send is the client's 400, not a failure."""

from __future__ import annotations

import pytest

from opsgate.backends.upstream import UpstreamBackend
from opsgate.domain.config import UpstreamDeployment
from opsgate.domain.context import RequestContext
from opsgate.domain.errors import InvalidRequestError
from opsgate.domain.requests import ChatCompletionRequest


def context(raw: bytes) -> RequestContext:
    ctx = RequestContext(endpoint="chat", raw_body=raw, headers={})
    ctx.body = ChatCompletionRequest.model_validate_json(raw)  # as if validation had let it through
    return ctx


def test_a_value_orjson_refuses_is_an_invalid_request() -> None:
    backend = UpstreamBackend(UpstreamDeployment(type="openai", base_url="http://127.0.0.1:9/v1", model="m"), "up#0")
    ctx = context(b'{"model": "up", "messages": [{"role": "user", "content": "hi"}], "x": 99999999999999999999}')
    with pytest.raises(InvalidRequestError) as caught:
        backend._payload(ctx, stream=False)
    assert caught.value.status == 400 and not caught.value.fallback_allowed


def test_the_payload_names_the_upstream_model_and_asks_for_stream_usage() -> None:
    backend = UpstreamBackend(UpstreamDeployment(type="openai", base_url="http://127.0.0.1:9/v1", model="m"), "up#0")
    ctx = context(b'{"model": "up", "messages": [{"role": "user", "content": "hi"}], "stream": true, "seed": 7}')
    payload = backend._payload(ctx, stream=True)
    assert b'"model":"m"' in payload and b'"include_usage":true' in payload and b'"seed":7' in payload


def test_a_null_stream_options_is_not_a_failure() -> None:
    backend = UpstreamBackend(UpstreamDeployment(type="openai", base_url="http://127.0.0.1:9/v1", model="m"), "up#0")
    ctx = context(
        b'{"model": "up", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": null}'
    )
    assert b'"stream_options":{"include_usage":true}' in backend._payload(ctx, stream=True)
