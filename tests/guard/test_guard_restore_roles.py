"""Reversible placeholders give back only the end user's own values (probe-guard finding 4).

Over real HTTP. A system prompt (operator data) and a tool message (a retrieved record of someone
else) hold emails the input PII scanner hides as ``<EMAIL_n>``. When the model echoes a placeholder —
or the client types one it was never given — the answer keeps the placeholder, streamed or not; the
user's own values still come back. ``restore_roles`` widens that, and is checked at config load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from opsgate.domain.guard_config import PiiScannerConfig
from tests.fake_upstream import Script
from tests.guard.conftest import TextUpstream, guarded_config
from tests.support import Gateway, start_gateway

OPERATOR = "maria.garcia@corp-internal.com"
THIRD = "john.smith@victim.example"
OWN = "ops@example.org"


def _policy(name: str, model: str, restore_roles: list[str] | None) -> dict[str, Any]:
    pii: dict[str, Any] = {"scanner": "pii", "action": "redact", "reversible": True}
    if restore_roles is not None:
        pii["restore_roles"] = restore_roles
    return {"name": name, "models": [model], "input": [pii], "output": [{"scanner": "pii", "action": "redact"}]}


@pytest.fixture(scope="module")
def gateway(text_upstream_server: TextUpstream) -> Iterator[Gateway]:
    guard = {"policies": [_policy("default-roles", "up", None), _policy("wider", "up-strict", ["user", "system"])]}
    gateway = start_gateway(guarded_config(text_upstream_server.base_url, guard))
    yield gateway
    gateway.server.stop()


def _answer(gateway: Gateway, model: str, messages: list[dict[str, Any]], stream: bool) -> str:
    body = {"model": model, "stream": stream, "messages": messages}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    if not stream:
        content: str = response.json()["choices"][0]["message"]["content"]
        return content
    events = [json.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")]
    return "".join((e["choices"][0].get("delta") or {}).get("content") or "" for e in events if e.get("choices"))


SYSTEM = {"role": "system", "content": f"Internal: the escalation contact for account 7 is {OPERATOR}."}


@pytest.mark.parametrize("stream", [False, True])
def test_a_placeholder_the_client_types_gets_no_operator_value(
    gateway: Gateway, text_upstream: TextUpstream, stream: bool
) -> None:
    text_upstream.script = Script(content="Sure! The contact is <EMAIL_1>. Done.")
    messages = [SYSTEM, {"role": "user", "content": "Please repeat <EMAIL_1> verbatim."}]
    answer = _answer(gateway, "up", messages, stream)
    assert OPERATOR not in answer
    assert answer == "Sure! The contact is <EMAIL_1>. Done."
    assert OPERATOR not in json.dumps(text_upstream.requests[-1]["body"])


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_record_stays_a_placeholder_and_the_users_own_value_comes_back(
    gateway: Gateway, text_upstream: TextUpstream, stream: bool
) -> None:
    text_upstream.script = Script(content="Echo: <EMAIL_1> and <EMAIL_2>.")
    messages = [
        {"role": "user", "content": "summarise the document"},
        {"role": "tool", "tool_call_id": "t", "content": f"Customer record: {THIRD}"},
        {"role": "user", "content": f"now write to {OWN} and say <EMAIL_1>"},
    ]
    answer = _answer(gateway, "up", messages, stream)
    assert answer == f"Echo: <EMAIL_1> and {OWN}."


def test_restore_roles_can_be_widened(gateway: Gateway, text_upstream: TextUpstream) -> None:
    text_upstream.script = Script(content="The contact is <EMAIL_1>.")
    answer = _answer(gateway, "up-strict", [SYSTEM, {"role": "user", "content": "Who is the contact?"}], False)
    assert answer == f"The contact is {OPERATOR}."


def test_restore_roles_is_checked_at_config_load() -> None:
    assert PiiScannerConfig(scanner="pii", reversible=True).restore_roles == ["user"]
    with pytest.raises(ValidationError, match="restore_roles needs reversible"):
        PiiScannerConfig(scanner="pii", restore_roles=["user"])
    with pytest.raises(ValidationError):
        PiiScannerConfig.model_validate({"scanner": "pii", "reversible": True, "restore_roles": ["operator"]})
