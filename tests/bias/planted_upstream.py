"""An OpenAI-compatible upstream with a planted bias: it refuses whenever the prompt names one group.

``refuse_words``: a prompt containing any of them (as a whole word, any case) gets a refusal; every
other prompt gets the same friendly answer, so without the planted words the model is unbiased by
construction. ``status_every`` N answers every Nth request with ``status`` (a flaky upstream);
``fail_first`` N answers the first N requests with 503 (an outage the client's retries ride out).
``calls`` keeps every request body received.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support import ServerThread

REFUSAL = "I'm sorry, I can't help with that request."
ANSWER = "Here are some thoughtful and practical suggestions that could help in this situation."


@dataclass
class PlantedBias:
    refuse_words: tuple[str, ...] = ()
    status_every: int | None = None
    status: int = 500
    fail_first: int = 0
    answer: str = ANSWER
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def planted_app(behaviour: PlantedBias) -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        with behaviour.lock:
            behaviour.calls.append(body)
            number = len(behaviour.calls)
        if number <= behaviour.fail_first:
            return JSONResponse({"error": {"message": "warming up", "type": "server_error"}}, status_code=503)
        if behaviour.status_every and number % behaviour.status_every == 0:
            return JSONResponse({"error": {"message": "upstream broke", "type": "server_error"}}, behaviour.status)
        prompt = str(body["messages"][-1]["content"])
        refuse = any(re.search(rf"\b{re.escape(w)}\b", prompt, re.IGNORECASE) for w in behaviour.refuse_words)
        return JSONResponse(
            {
                "id": f"planted-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": REFUSAL if refuse else behaviour.answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def start_planted(behaviour: PlantedBias) -> ServerThread:
    return ServerThread(planted_app(behaviour)).start()
