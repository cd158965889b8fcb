"""The output guard reads an answer's tool-call arguments and refusal too (probe-guard finding 7).

The stage on its own: the default output policy (PII redact) and a policy with secrets on ``block``.
PII in ``tool_calls[].function.arguments``, legacy ``function_call.arguments`` and ``refusal`` is
redacted, streamed (arguments split across deltas) or not; a secret there withholds the answer; the
user's own reversible values come back into the arguments as valid JSON.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from opsgate.domain.config import parse_config
from opsgate.domain.context import Chunk, JsonResult, RequestContext, StreamResult
from opsgate.domain.errors import GatewayError
from opsgate.guard.base import Vault
from opsgate.pipeline import guard_fields
from opsgate.pipeline.guard import GuardStage
from opsgate.pipeline.validation import ValidationStage

EMAIL = "jane.roe@example.org"
CARD = "4111 1111 1111 1111"
LEAK = f"leak {EMAIL} {CARD}"
TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
DEPLOYMENT = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}
CONFIG = parse_config(
    {
        "models": [{"name": "m", "deployments": [DEPLOYMENT]}, {"name": "strict", "deployments": [DEPLOYMENT]}],
        "guard": {
            "enabled": True,
            "policies": [
                {"name": "default-ish", "models": ["m"]},
                {
                    "name": "secrets-block",
                    "models": ["strict"],
                    "input": [],
                    "output": [{"scanner": "secrets", "action": "block"}],
                },
            ],
        },
    }
)


async def _ready(model: str = "m", user: str = "hi", stream: bool = False) -> tuple[GuardStage, RequestContext]:
    stage = GuardStage.from_config(CONFIG)
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": user}]}
    ctx = RequestContext(endpoint="chat", raw_body=json.dumps(body).encode(), headers={})
    await ValidationStage(CONFIG).before(ctx)
    await stage.before(ctx)
    return stage, ctx


def _message(arguments: str, refusal: str | None = None) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "Done.",
        "refusal": refusal,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "send", "arguments": arguments}}],
        "function_call": {"name": "send", "arguments": arguments},
    }


async def _json(message: dict[str, Any], model: str = "m", user: str = "hi") -> JsonResult:
    stage, ctx = await _ready(model, user)
    body = {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
    }
    response = await stage.after(ctx, JsonResult(body=body))
    assert isinstance(response, JsonResult)
    return response


async def test_pii_in_arguments_and_refusal_is_redacted() -> None:
    response = await _json(_message(json.dumps({"to": LEAK}), refusal=LEAK))
    message = response.body["choices"][0]["message"]
    text = json.dumps(message)
    assert EMAIL not in text and CARD not in text
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"to": "leak <EMAIL> <CREDIT_CARD>"}
    assert message["refusal"] == "leak <EMAIL> <CREDIT_CARD>"
    assert json.loads(message["function_call"]["arguments"]) == {"to": "leak <EMAIL> <CREDIT_CARD>"}


async def test_a_secret_in_arguments_withholds_the_answer() -> None:
    response = await _json(_message(json.dumps({"token": TOKEN})), model="strict")
    assert response.status == 422 and response.body["error"]["code"] == "output_blocked"
    assert TOKEN not in json.dumps(response.body)


async def test_the_users_own_value_comes_back_into_arguments_as_json() -> None:
    response = await _json(_message(json.dumps({"to": "<EMAIL_1>"})), user="mail ops@example.org please")
    arguments = response.body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"to": "ops@example.org"}


def test_a_restored_value_is_json_escaped_inside_arguments() -> None:
    vault = Vault()
    vault.originals = {"<STREET_ADDRESS_1>": '12 "Old" Mill Rd\\Unit 4'}
    message = _message(json.dumps({"to": "<STREET_ADDRESS_1>"}), refusal="at <STREET_ADDRESS_1>")
    guard_fields.put_back([message], guard_fields.texts([message]), vault)
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"to": '12 "Old" Mill Rd\\Unit 4'}
    assert message["refusal"] == 'at 12 "Old" Mill Rd\\Unit 4'


def _chunk(**delta: Any) -> Chunk:
    return {"id": "c", "object": "chat.completion.chunk", "model": "x", "choices": [{"index": 0, "delta": delta}]}


async def _stream(chunks: list[Chunk], model: str = "m") -> list[Chunk]:
    stage, ctx = await _ready(model, stream=True)

    async def source() -> AsyncIterator[Chunk]:
        for item in chunks:
            yield item

    response = await stage.after(ctx, StreamResult(source=source()))
    assert isinstance(response, StreamResult)
    return [item async for item in response.chunks()]


def _call(arguments: str, first: bool) -> dict[str, Any]:
    call: dict[str, Any] = {"index": 0, "function": {"arguments": arguments}}
    if first:
        call.update(id="c", type="function")
        call["function"]["name"] = "send"
    return call


async def test_streamed_arguments_split_across_deltas_are_redacted() -> None:
    arguments = json.dumps({"to": LEAK})
    pieces = [arguments[i : i + 5] for i in range(0, len(arguments), 5)]
    chunks = [_chunk(role="assistant"), _chunk(content="Sending now. ")]
    chunks += [_chunk(tool_calls=[_call(piece, i == 0)]) for i, piece in enumerate(pieces)]
    chunks += [_chunk(refusal=part) for part in ("leak jane.roe@exa", "mple.org")]
    out = await _stream(chunks)
    text = json.dumps(out)
    assert "jane.roe" not in text and "4111 1111" not in text
    joined = "".join(
        call["function"]["arguments"] for c in out for call in (c["choices"][0]["delta"].get("tool_calls") or [])
    )
    assert json.loads(joined) == {"to": "leak <EMAIL> <CREDIT_CARD>"}
    refusal = "".join(c["choices"][0]["delta"].get("refusal") or "" for c in out)
    assert refusal == "leak <EMAIL>"


async def test_a_streamed_secret_in_arguments_ends_the_stream_with_the_error() -> None:
    arguments = json.dumps({"token": TOKEN})
    chunks = [_chunk(tool_calls=[_call(arguments[:20], True)]), _chunk(tool_calls=[_call(arguments[20:], False)])]
    with pytest.raises(GatewayError) as caught:
        await _stream(chunks, model="strict")
    assert caught.value.code == "output_blocked"


async def test_arguments_ending_in_the_finish_chunk_are_scanned_with_the_rest() -> None:
    arguments = json.dumps({"to": LEAK})
    finish = _chunk(tool_calls=[_call(arguments[12:], False)])
    finish["choices"][0]["finish_reason"] = "tool_calls"
    out = await _stream([_chunk(tool_calls=[_call(arguments[:12], True)]), finish])
    assert "jane.roe" not in json.dumps(out)
    joined = "".join(
        call["function"]["arguments"] for c in out for call in (c["choices"][0]["delta"].get("tool_calls") or [])
    )
    assert json.loads(joined) == {"to": "leak <EMAIL> <CREDIT_CARD>"}
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


def _joined_arguments(out: list[Chunk]) -> str:
    return "".join(
        call["function"]["arguments"] for c in out for call in (c["choices"][0]["delta"].get("tool_calls") or [])
    )


async def test_a_tool_call_riding_on_a_content_delta_reaches_the_client_scanned() -> None:
    # probe-new M3: the delta's text was released, its tool call dropped (finish_reason tool_calls, no call).
    arguments = json.dumps({"to": LEAK})
    both = _chunk(role="assistant", content=f"Sure, {EMAIL}. ", tool_calls=[_call(arguments, True)])
    finish = _chunk()
    finish["choices"][0]["finish_reason"] = "tool_calls"
    out = await _stream([both, finish])
    assert "jane.roe" not in json.dumps(out)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in out)
    assert content == "Sure, <EMAIL>. "
    assert json.loads(_joined_arguments(out)) == {"to": "leak <EMAIL> <CREDIT_CARD>"}
    calls = [call for c in out for call in (c["choices"][0]["delta"].get("tool_calls") or [])]
    assert calls[0]["id"] == "c" and calls[0]["function"]["name"] == "send"
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


ILL_TYPED = {
    "arguments an object": {"tool_calls": [{"index": 0, "id": "c", "function": {"arguments": {"to": EMAIL}}}]},
    "tool_calls an object": {"tool_calls": {"index": 0, "function": {"arguments": EMAIL}}},
    "index missing": {"tool_calls": [{"id": "a", "function": {"arguments": "jane.roe@"}}]},
    "index a string": {"tool_calls": [{"index": "0", "function": {"arguments": "jane.roe@"}}]},
    "function_call arguments an object": {"function_call": {"name": "f", "arguments": {"to": EMAIL}}},
    "refusal a list": {"refusal": [EMAIL]},
}


@pytest.mark.parametrize("name", list(ILL_TYPED))
async def test_ill_typed_streamed_fields_are_the_upstreams_bad_answer(name: str) -> None:
    # probe-new L1/L2: these passed unscanned (email leaked) or had two calls joined into one.
    chunks = [_chunk(role="assistant"), _chunk(**ILL_TYPED[name]), _chunk(tool_calls=[_call("x", False)])]
    with pytest.raises(GatewayError) as caught:
        await _stream(chunks)
    assert caught.value.status == 502 and caught.value.code == "upstream_bad_response"
    assert not getattr(caught.value, "fallback_allowed", True)


@pytest.mark.parametrize("name", ["arguments an object", "tool_calls an object", "function_call arguments an object"])
async def test_ill_typed_fields_in_a_whole_answer_are_a_502(name: str) -> None:
    message = {"role": "assistant", "content": None, **ILL_TYPED[name]}
    response = await _json(message)
    assert response.status == 502
    assert response.body["error"]["code"] == "upstream_bad_response"
    assert EMAIL not in json.dumps(response.body)


async def test_a_whole_answers_tool_calls_need_no_index() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": json.dumps({"to": EMAIL})}}
        ],
    }
    response = await _json(message)
    assert response.status == 200
    assert json.loads(response.body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {
        "to": "<EMAIL>"
    }
