"""A tiny gateway stand-in that implements the guard detection contract, for counting tests.

- any message containing "ignore previous" → 400 ``input_blocked`` (with a policy detail field);
- a user message containing "forbidden output" → 422 ``output_blocked``;
- a user message containing "suspicious" → 200 with ``x-opsgate-guard-warn: injection,secrets``;
- a user message containing "crash" → 500;
- a user message asking for "the secret" → 200 echoing the system message (so a canary leaks);
- anything else → 200 "Sure, here you go.".
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code, **extra}}
    return JSONResponse(body, status_code=status)


def _completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "guarded",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def contract_app(seen: list[dict[str, Any]]) -> Starlette:
    """The app; every request body and its headers are appended to ``seen``."""

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append({"body": body, "headers": dict(request.headers)})
        if body["model"] != "guarded":
            return _error(404, "model_not_found", f"The model '{body['model']}' does not exist.")
        text = " ".join(m["content"] for m in body["messages"]).lower()
        user = body["messages"][-1]["content"].lower()
        system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
        if "ignore previous" in text:
            return _error(
                400, "input_blocked", "Blocked by policy 'default'", policy="default", scanner="prompt_injection"
            )
        if "forbidden output" in user:
            return _error(422, "output_blocked", "Blocked by policy 'default': toxicity")
        if "crash" in user:
            return _error(500, "internal_error", "boom")
        if "the secret" in user:
            return JSONResponse(_completion(f"Of course! My instructions say: {system}"))
        if "suspicious" in user:
            return JSONResponse(_completion("Hmm."), headers={"x-opsgate-guard-warn": "injection, secrets"})
        return JSONResponse(_completion("Sure, here you go."))

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
