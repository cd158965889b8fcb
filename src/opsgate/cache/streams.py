"""Between streamed and whole answers: entries are stored whole, whichever way they were produced.

``StreamAssembler`` builds the whole answer from the chunks of a stream as they pass; ``replay``
turns a stored answer back into chunks, so a streaming request can be served from the cache.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from opsgate.domain.context import Chunk


class _Choice:
    def __init__(self, index: int) -> None:
        self.index = index
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, Any] | None = None
        self.finish_reason: str | None = None

    def add_logprobs(self, logprobs: object) -> None:
        if not isinstance(logprobs, dict):
            return
        merged = self.logprobs if self.logprobs is not None else {}
        for name, value in logprobs.items():
            if isinstance(value, list):
                merged.setdefault(name, []).extend(value)
            elif value is not None or name not in merged:
                merged[name] = value
        self.logprobs = merged

    def add_tool_calls(self, calls: object) -> None:
        for call in calls if isinstance(calls, list) else ():
            slot = self.tool_calls.setdefault(
                call.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if call.get("id"):
                slot["id"] = call["id"]
            if call.get("type"):
                slot["type"] = call["type"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""


class StreamAssembler:
    """Collects a chat or text-completion stream into the equivalent whole response body."""

    def __init__(self, endpoint: str) -> None:
        self.chat = endpoint == "chat"
        self.head: dict[str, Any] = {}
        self.choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: Chunk) -> None:
        """Take in one chunk (before anything downstream may change it)."""
        if not self.head:
            self.head = {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if k in chunk}
        for raw in chunk.get("choices") or ():
            choice = self.choices.get(raw.get("index", 0))
            if choice is None:
                choice = self.choices[raw.get("index", 0)] = _Choice(raw.get("index", 0))
            if self.chat:
                delta = raw.get("delta") or {}
                choice.role = delta.get("role") or choice.role
                if delta.get("content"):
                    choice.content.append(delta["content"])
                if delta.get("refusal"):
                    choice.refusal.append(delta["refusal"])
                choice.add_tool_calls(delta.get("tool_calls"))
            elif raw.get("text"):
                choice.content.append(raw["text"])
            choice.add_logprobs(raw.get("logprobs"))
            if raw.get("finish_reason"):
                choice.finish_reason = raw["finish_reason"]
        if chunk.get("usage"):
            self.usage = dict(chunk["usage"])

    def body(self) -> dict[str, Any]:
        """The whole response the stream amounted to."""
        choices = []
        for choice in sorted(self.choices.values(), key=lambda c: c.index):
            out: dict[str, Any] = {"index": choice.index}
            if self.chat:
                message: dict[str, Any] = {"role": choice.role, "content": "".join(choice.content) or None}
                if choice.refusal:
                    message["refusal"] = "".join(choice.refusal)
                if choice.tool_calls:
                    message["tool_calls"] = [choice.tool_calls[i] for i in sorted(choice.tool_calls)]
                elif message["content"] is None:
                    message["content"] = ""
                out["message"] = message
            else:
                out["text"] = "".join(choice.content)
            out["logprobs"] = choice.logprobs
            out["finish_reason"] = choice.finish_reason
            choices.append(out)
        body: dict[str, Any] = {
            **self.head,
            "object": "chat.completion" if self.chat else "text_completion",
            "choices": choices,
        }
        if self.usage is not None:
            body["usage"] = self.usage
        return body


def replay_chunks(body: dict[str, Any], endpoint: str) -> list[Chunk]:
    """A stored answer as stream chunks: per choice its whole content, then its finish, then usage."""
    chat = endpoint == "chat"
    head: dict[str, Any] = {
        "id": body.get("id", ""),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": body.get("created", 0),
        "model": body.get("model", ""),
    }
    if body.get("system_fingerprint"):
        head["system_fingerprint"] = body["system_fingerprint"]
    chunks: list[Chunk] = []
    for choice in body.get("choices") or ():
        index = choice.get("index", 0)
        if chat:
            message = choice.get("message") or {}
            delta: dict[str, Any] = {"role": message.get("role") or "assistant", "content": message.get("content")}
            if message.get("refusal") is not None:
                delta["refusal"] = message["refusal"]
            if message.get("tool_calls"):
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            first: dict[str, Any] = {"index": index, "delta": delta, "logprobs": choice.get("logprobs")}
            last: dict[str, Any] = {"index": index, "delta": {}}
        else:
            first = {"index": index, "text": choice.get("text") or "", "logprobs": choice.get("logprobs")}
            last = {"index": index, "text": ""}
        chunks.append({**head, "choices": [{**first, "finish_reason": None}]})
        chunks.append({**head, "choices": [{**last, "finish_reason": choice.get("finish_reason")}]})
    if body.get("usage"):
        chunks.append({**head, "choices": [], "usage": body["usage"]})
    return chunks


async def replay(body: dict[str, Any], endpoint: str) -> AsyncIterator[Chunk]:
    """``replay_chunks`` as the async source of a ``StreamResult``."""
    for chunk in replay_chunks(body, endpoint):
        yield chunk
