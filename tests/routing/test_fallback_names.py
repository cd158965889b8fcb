"""A fallback alias that a key may not call stays unnamed in what that key gets back.

Such an alias answers the key with 404, exactly as an unknown model does, so its name is the
operator's; before, a restricted key learned it from ``x-opsgate-model`` / ``x-opsgate-deployment``
of an answer it served, and from the "all N attempts failed" message. The record keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

ADMIN_KEY = "bootstrap-admin-key-for-fallback-name-tests-0123"
SECRET_ALIAS = "internal-reserve-7"


def _deployment(server: FakeUpstream) -> dict[str, Any]:
    timeouts = {"connect": 1, "first_byte": 2, "total": 5}
    breaker = {"enabled": False}
    return {"type": "openai", "base_url": server.base_url, "model": "m", "timeouts": timeouts, "breaker": breaker}


@pytest.fixture()
def gateway(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Iterator[Gateway]:
    a, b = upstreams
    started = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN_KEY},
            "models": [
                {
                    "name": "svc",
                    "routing": {"retries": 0, "fallbacks": [SECRET_ALIAS]},
                    "deployments": [_deployment(a)],
                },
                {"name": SECRET_ALIAS, "deployments": [_deployment(b)]},
            ],
        }
    )
    yield started
    started.server.stop()


def _key(gateway: Gateway, models: list[str] | None) -> dict[str, str]:
    created = httpx.post(
        gateway.url + "/admin/keys",
        json={"tenant": "t", "role": "service", "models": models},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['secret']}"}


def _chat(gateway: Gateway, headers: dict[str, str]) -> httpx.Response:
    body = {"model": "svc", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_a_restricted_key_is_not_told_which_fallback_served(
    gateway: Gateway, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, _ = upstreams
    a.script = Script(mode="status", status=500, body={"error": {"message": "boom"}})
    narrow, wide = _key(gateway, ["svc"]), _key(gateway, None)
    served = _chat(gateway, narrow)
    assert served.status_code == 200, served.text
    assert SECRET_ALIAS not in str(served.headers)
    assert served.headers["x-opsgate-model"] == "svc" and served.headers["x-opsgate-deployment"] == "fallback"
    # The name is confirmable by no other route either: the alias answers as unknown.
    direct = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": SECRET_ALIAS, "messages": [{"role": "user", "content": "hi"}]},
        headers=narrow,
    )
    assert direct.status_code == 404
    # A key that may call it sees it, and the record keeps it for the operator.
    allowed = _chat(gateway, wide)
    assert allowed.headers["x-opsgate-model"] == SECRET_ALIAS
    assert allowed.headers["x-opsgate-deployment"] == f"{SECRET_ALIAS}#0"
    record = gateway.records_for(served.headers["x-request-id"])[0]
    assert record["deployment"] == f"{SECRET_ALIAS}#0"


def test_a_restricted_key_is_not_told_which_fallback_failed(
    gateway: Gateway, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    for server in upstreams:
        server.script = Script(mode="status", status=500, body={"error": {"message": "boom"}})
    failed = _chat(gateway, _key(gateway, ["svc"]))
    assert failed.status_code >= 500
    message = failed.json()["error"]["message"]
    assert message.startswith("all ") and "fallback#0" in message and SECRET_ALIAS not in failed.text, message
    # The operator's record keeps the real name in its message too (it said "fallback#0" there as well).
    record = gateway.records_for(failed.headers["x-request-id"])[0]
    assert f"{SECRET_ALIAS}#0" in record["error_message"] and "fallback#0" not in record["error_message"], record


def test_no_failure_path_names_the_fallback_either(
    gateway: Gateway, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    # Found by review: the failure's x-opsgate-deployment header, a fallback's own 400 and an error event
    # in a stream the fallback served still named it.
    _, b = upstreams
    narrow = _key(gateway, ["svc"])
    for server in upstreams:
        server.script = Script(mode="status", status=500, body={"error": {"message": "boom"}})
    failed = _chat(gateway, narrow)
    assert failed.status_code >= 500 and failed.headers["x-opsgate-deployment"] == "fallback"
    assert SECRET_ALIAS not in str(failed.headers)
    b.script = Script(mode="status", status=400, body={"error": {"message": "bad request"}})
    refused = _chat(gateway, narrow)
    assert refused.status_code == 400 and SECRET_ALIAS not in refused.text + str(refused.headers), refused.text
    b.script = Script(mode="stream_error")
    body = {"model": "svc", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=narrow, timeout=30) as stream:
        text = "".join(stream.iter_text())
        headers = str(stream.headers)
    assert '"error"' in text and "fallback#0" in text, text[-300:]
    assert SECRET_ALIAS not in text + headers
    streamed = gateway.records_for(stream.headers["x-request-id"])[0]
    assert f"{SECRET_ALIAS}#0" in streamed["error_message"], streamed  # the record's message, as it was


def test_the_output_guard_does_not_name_the_fallback(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    # Second review: an answer the guard withholds as unusable was reported as "Upstream <alias>#0 sent …".
    a, b = upstreams
    started = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN_KEY},
            "guard": {"enabled": True},
            "models": [
                {
                    "name": "svc",
                    "routing": {"retries": 0, "fallbacks": [SECRET_ALIAS]},
                    "deployments": [_deployment(a)],
                },
                {"name": SECRET_ALIAS, "deployments": [_deployment(b)]},
            ],
        }
    )
    try:
        a.script = Script(mode="status", status=500, body={"error": {"message": "boom"}})
        message = {"role": "assistant", "content": "hi", "tool_calls": "oops"}
        b.script = Script(
            mode="status",
            status=200,
            body={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )
        withheld = _chat(started, _key(started, ["svc"]))
        assert withheld.status_code == 502 and "tool_calls" in withheld.text, withheld.text
        assert SECRET_ALIAS not in withheld.text + str(withheld.headers)
    finally:
        started.server.stop()
