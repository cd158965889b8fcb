"""Between streamed and whole answers: entries are stored whole, whichever way they were produced.

``StreamAssembler`` builds the whole answer from the chunks of a stream as they pass; ``replay``
turns a stored answer back into chunks, so a streaming request can be served from the cache.
A stream whose deltas it cannot assemble faithfully (an upstream's tool call with object
``arguments``, a list ``index``…) is marked not ``storable`` and relayed untouched: the cache
skips what it cannot store, it never fails the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from opsgate.domain.context import Chunk


class _Unstorable(Exception):
    """A delta the assembler cannot turn into part of a whole answer."""


def _text(value: object) -> str:
    """A text field of a delta: a string, or nothing (None, empty)."""
    if value is None or type(value) is str:
        return value or ""
    raise _Unstorable


def _index(value: object) -> int:
    """A choice's or tool call's index: a plain integer (a bool or a list cannot key a dict of them)."""
    if type(value) is not int:
        raise _Unstorable
    return value


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
            if type(call) is not dict:
                raise _Unstorable
            function = call.get("function") or {}
            if type(function) is not dict:
                raise _Unstorable
            name, arguments = _text(function.get("name")), _text(function.get("arguments"))
            call_id, kind = _text(call.get("id")), _text(call.get("type"))
            slot = self.tool_calls.setdefault(
                _index(call.get("index", 0)),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if call_id:
                slot["id"] = call_id
            if kind:
                slot["type"] = kind
            slot["function"]["name"] += name
            slot["function"]["arguments"] += arguments


class StreamAssembler:
    """Collects a chat or text-completion stream into the equivalent whole response body."""

    def __init__(self, endpoint: str) -> None:
        self.chat = endpoint == "chat"
        self.head: dict[str, Any] = {}
        self.choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None
        self.storable = True  # False once a chunk could not be assembled: the stream is then not stored

    def add(self, chunk: Chunk) -> None:
        """Take in one chunk (before anything downstream may change it); an unreadable one ends assembling."""
        if not self.storable:
            return
        try:
            self._add(chunk)
        except _Unstorable:
            self.storable = False
            self.choices.clear()  # what was assembled will not be stored: free it now

    def _add(self, chunk: Chunk) -> None:
        if not self.head:
            self.head = {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if k in chunk}
        for raw in chunk.get("choices") or ():
            if type(raw) is not dict:
                raise _Unstorable
            index = _index(raw.get("index", 0))
            choice = self.choices.get(index)
            if choice is None:
                choice = self.choices[index] = _Choice(index)
            if self.chat:
                delta = raw.get("delta") or {}
                if type(delta) is not dict:
                    raise _Unstorable
                choice.role = _text(delta.get("role")) or choice.role
                if content := _text(delta.get("content")):
                    choice.content.append(content)
                if refusal := _text(delta.get("refusal")):
                    choice.refusal.append(refusal)
                choice.add_tool_calls(delta.get("tool_calls"))
            elif text := _text(raw.get("text")):
                choice.content.append(text)
            choice.add_logprobs(raw.get("logprobs"))
            if raw.get("finish_reason"):
                choice.finish_reason = raw["finish_reason"]
        usage = chunk.get("usage")
        if usage:
            if type(usage) is not dict:
                raise _Unstorable
            self.usage = dict(usage)

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
