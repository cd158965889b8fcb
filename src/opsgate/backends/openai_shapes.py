"""Builders for OpenAI response objects, so every in-process backend answers in the same shape."""

from __future__ import annotations

import time
from typing import Any

from opsgate.domain.context import Chunk, Endpoint


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def response_id(endpoint: Endpoint, request_id: str) -> str:
    """``chatcmpl-…`` or ``cmpl-…``, derived from the gateway's request id so logs line up."""
    return ("chatcmpl-" if endpoint == "chat" else "cmpl-") + request_id


def completion_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat-style per-token logprob entries in the legacy completions shape."""
    offsets: list[int] = []
    at = 0
    for entry in entries:
        offsets.append(at)
        at += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


def whole_response(
    endpoint: Endpoint,
    *,
    request_id: str,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    logprobs: list[dict[str, Any]] | None,
) -> Chunk:
    """A complete ``chat.completion`` or ``text_completion`` object."""
    created = int(time.time())
    if endpoint == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
            "finish_reason": finish_reason,
        }
        kind = "chat.completion"
    else:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": completion_logprobs(logprobs) if logprobs is not None else None,
            "finish_reason": finish_reason,
        }
        kind = "text_completion"
    return {
        "id": response_id(endpoint, request_id),
        "object": kind,
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens),
    }


class ChunkBuilder:
    """Makes the chunks of one stream, all with the same id and creation time."""

    def __init__(self, endpoint: Endpoint, request_id: str, model: str) -> None:
        self.endpoint = endpoint
        self.id = response_id(endpoint, request_id)
        self.model = model
        self.created = int(time.time())
        self.object = "chat.completion.chunk" if endpoint == "chat" else "text_completion"

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> Chunk:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }

    def role(self) -> Chunk:
        """The first chat chunk, announcing the assistant role."""
        return self._chunk(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )

    def content(self, text: str, logprob: dict[str, Any] | None = None) -> Chunk:
        """A chunk carrying one piece of output text (and its logprob entry when asked)."""
        if self.endpoint == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {"content": text},
                "logprobs": {"content": [logprob], "refusal": None} if logprob is not None else None,
                "finish_reason": None,
            }
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": completion_logprobs([logprob]) if logprob is not None else None,
                "finish_reason": None,
            }
        return self._chunk([choice])

    def finish(self, reason: str) -> Chunk:
        """The chunk that carries the finish reason."""
        if self.endpoint == "chat":
            choice: dict[str, Any] = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}
        return self._chunk([choice])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> Chunk:
        """The final usage chunk (``choices == []``), as with ``stream_options.include_usage``."""
        return self._chunk([], usage=usage(prompt_tokens, completion_tokens))
