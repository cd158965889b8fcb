"""An OpenAI-compatible upstream for evaluation tests: answers what the prompt asks it to.

A user message ``say: X`` is answered ``X``; with ``wrong_every`` N, every item whose text ends in
a number divisible by N is answered wrongly (a constructed regression). Judge prompts (they ask for
JSON) get a verdict. ``delay`` slows every answer; ``calls`` lists the prompts received.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support import ServerThread


@dataclass
class EchoBehaviour:
    wrong_every: int | None = None
    delay: float = 0.0
    fail_every: int | None = None
    judge_reply: str = '{"score": 4, "reason": "fine"}'
    pairwise_reply: str = '{"winner": "tie", "reason": "same"}'
    calls: list[str] = field(default_factory=list)


def answer_for(text: str, behaviour: EchoBehaviour) -> str:
    match = re.match(r"say: (.*)", text, re.S)
    answer = match.group(1) if match else "I do not know."
    number = re.search(r"(\d+)\s*$", text)
    if behaviour.wrong_every and number and int(number.group(1)) % behaviour.wrong_every == 0:
        return "something else entirely"
    return answer


def echo_app(behaviour: EchoBehaviour) -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        text = str(body["messages"][-1]["content"])
        behaviour.calls.append(text)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        number = re.search(r"(\d+)\s*$", text)
        if behaviour.fail_every and number and int(number.group(1)) % behaviour.fail_every == 0:
            return JSONResponse({"error": {"message": "upstream broke", "type": "server_error"}}, status_code=500)
        if body.get("response_format"):
            content = behaviour.pairwise_reply if "Answer 1" in text else behaviour.judge_reply
        else:
            content = answer_for(text, behaviour)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }
        if body.get("logprobs"):
            choice["logprobs"] = {"content": [{"token": "x", "logprob": -0.1, "top_logprobs": []}]}
        return JSONResponse(
            {
                "id": "echo-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [choice],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def start_echo(behaviour: EchoBehaviour) -> ServerThread:
    return ServerThread(echo_app(behaviour)).start()
