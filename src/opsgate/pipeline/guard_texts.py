"""Every piece of text in a request that reaches the model, for the input scanners, and back in place.

``texts`` lists ``(role, text)`` pairs in a fixed order; ``with_texts`` takes the (possibly redacted)
texts in that same order and puts each back where it came from. Both walk the body with the same
rules (``_is_text``, ``_payload``), so the order cannot drift apart.

What is text (probe-guard finding 3 and probe-new M2: fields that reached the upstream unscanned):

- a chat message: its ``content`` (a string, or every string inside every content part), its
  ``name``, and every string in any other key it carries (``tool_calls[].id`` and
  ``.function.arguments`` — a string, or the strings of an object sent in its place —,
  ``tool_call_id``, a vendor's extra key). Role: the message's (a message the client marks
  untrusted reads as ``tool``);
- the completions ``prompt`` and ``suffix`` (role ``user``); embedding inputs (``user``);
- everything else in the body that is forwarded — ``tools``, ``response_format``, ``stop``,
  ``user``, ``prediction`` and any unknown key (vLLM's ``chat_template``, ``documents`` …) — with
  role ``developer``: the application's setup of the request, like a system prompt.
- dict keys the client chose (a JSON schema's property names, a vendor object's keys): scanned like
  values. A key is an identifier the model echoes back (``{"<property>": …}``), so a redaction is
  not applied to it: a key the policy would rewrite refuses the request (400
  ``input_redacted_key``) — renaming it would change the contract of the answer; block, warn and
  log act on a key as on any text.

Never text, by position only (the OpenAI content parts): a base64 payload — ``image_url.url`` that is
a ``data:image/…;base64,`` URL, ``input_audio.data``, ``file.file_data`` (raw or a ``data:`` URL) —
and only when it really is base64 (anything else there is scanned); the keys and literal values of
the OpenAI / JSON-schema vocabulary (``type``, ``"function"``, ``"object"`` …: they cannot carry
data, and every scanned string costs a scanner call each); ``model``, ``messages`` (walked above)
and ``metadata`` (the gateway's own, not forwarded). An identifier such as a tool call's ``id`` is
scanned: a redaction is the same text for the same value, so the id in the assistant's call and in
the tool result's ``tool_call_id`` stay equal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opsgate.domain.errors import InvalidRequestError
from opsgate.domain.requests import ChatCompletionRequest, ChatMessage, CompletionRequest, EmbeddingRequest

# Body fields that are not forwarded text, or are walked on their own.
_NOT_BODY_TEXT = frozenset({"model", "messages", "metadata", "prompt", "suffix", "input"})
_BODY_TEXT_FIELDS = ("user", "stop")  # declared string fields forwarded as they are
_SETUP_ROLE = "developer"
# Keys and values of the OpenAI / JSON-schema vocabulary: not data, not scanned (a scan per string).
_VOCABULARY = frozenset(
    {
        "type", "function", "name", "description", "parameters", "properties", "required", "items",
        "enum", "strict", "additionalProperties", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions",
        "format", "default", "title", "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength",
        "pattern", "const", "nullable", "json_schema", "schema", "json_object", "text", "image_url",
        "input_audio", "file", "url", "detail", "data", "file_data", "file_id", "filename", "id", "index",
        "tool_calls", "tool_call_id", "arguments", "function_call", "refusal", "content", "role", "object",
        "string", "number", "integer", "boolean", "array", "null", "auto", "none", "low", "high",
        "wav", "mp3", "tool_choice", "parallel_tool_calls", "prediction", "documents", "tools", "seed",
        "logit_bias", "top_k", "min_p", "chat_template", "guided_json", "reasoning_effort", "store",
    }
)  # fmt: skip
# Content-part payload positions (OpenAI schema): the part's key -> the key of its base64 payload.
_PAYLOADS = {"image_url": "url", "input_audio": "data", "file": "file_data"}
_DATA_URL = re.compile(r"data:([A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+)?;base64,")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

Replace = Callable[[str], str]


class _KeyChanged(Exception):
    """A key the scan would rewrite (see the module's docstring)."""


def _is_text(text: str) -> bool:
    return text not in _VOCABULARY


def _payload(holder: str, text: str) -> bool:
    """Whether ``text`` at ``<part>.<holder>.<payload key>`` is a base64 payload (not scanned)."""
    start = 0
    if text.startswith("data:"):
        match = _DATA_URL.match(text)
        if match is None or (holder == "image_url" and not (match.group(1) or "").startswith("image/")):
            return False
        start = match.end()
    elif holder == "image_url":
        return False  # an image URL that is not a data: URL is text (its query may carry data)
    size = len(text) - start
    return size > 0 and size % 4 == 0 and _BASE64.fullmatch(text, start) is not None


def _strings(value: Any, part: bool = False) -> Iterator[str]:
    """Every text string in a JSON value (keys before their values), depth first, dict order.
    ``part``: ``value`` is a content part's extra keys (its payload positions are skipped)."""
    if isinstance(value, str):
        if _is_text(value):
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if _is_text(key):
                yield key
            payload = _PAYLOADS.get(key) if part else None
            if payload is not None and isinstance(item, dict):
                for inner, text in item.items():
                    if _is_text(inner):
                        yield inner
                    if not (inner == payload and isinstance(text, str) and _payload(key, text)):
                        yield from _strings(text)
            else:
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _key(key: str, replace: Replace) -> str:
    if _is_text(key) and replace(key) != key:
        raise _KeyChanged(key)
    return key


def _replaced(value: Any, replace: Replace, part: bool = False) -> Any:
    """``value`` with each string ``_strings`` lists replaced (same walk, same order)."""
    if isinstance(value, str):
        return replace(value) if _is_text(value) else value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = _key(key, replace)
            payload = _PAYLOADS.get(key) if part else None
            if payload is not None and isinstance(item, dict):
                inner_out: dict[str, Any] = {}
                for inner, text in item.items():
                    inner = _key(inner, replace)
                    skip = inner == payload and isinstance(text, str) and _payload(key, text)
                    inner_out[inner] = text if skip else _replaced(text, replace)
                out[key] = inner_out
            else:
                out[key] = _replaced(item, replace)
        return out
    if isinstance(value, list):
        return [_replaced(item, replace) for item in value]
    return value


def _part_type(text: str) -> bool:
    """A content part's declared ``type`` is scanned unless it is one OpenAI defines."""
    return _is_text(text) and text not in ("input_text", "output_text")


def _message_strings(message: ChatMessage) -> Iterator[str]:
    content = message.content
    if isinstance(content, str):
        yield content
    elif content:
        for part in content:
            if _part_type(part.type):
                yield part.type
            if part.text is not None:
                yield part.text
            if part.model_extra:
                yield from _strings(part.model_extra, part=True)
    if message.name is not None:
        yield message.name
    if message.model_extra:
        yield from _strings(message.model_extra)


def _message_replaced(message: ChatMessage, replace: Replace) -> ChatMessage:
    update: dict[str, Any] = {}
    content = message.content
    if isinstance(content, str):
        update["content"] = replace(content)
    elif content:
        parts = []
        for part in content:
            changes: dict[str, Any] = {}
            if _part_type(part.type):
                changes["type"] = replace(part.type)
            if part.text is not None:
                changes["text"] = replace(part.text)
            if part.model_extra:
                extra = _replaced(part.model_extra, replace, part=True)
                changes.update(extra)
            parts.append(part.model_copy(update=changes) if changes else part)
        update["content"] = parts
    if message.name is not None:
        update["name"] = replace(message.name)
    if message.model_extra:
        update.update(_replaced(message.model_extra, replace))
    return message.model_copy(update=update) if update else message


def _setup_strings(body: ChatCompletionRequest | CompletionRequest | EmbeddingRequest) -> Iterator[str]:
    """The forwarded body text outside the messages / prompt / inputs (role ``developer``)."""
    for name in _BODY_TEXT_FIELDS:
        value = getattr(body, name, None)
        if value is not None:
            yield from _strings(value)
    if isinstance(body, ChatCompletionRequest) and body.response_format is not None:
        yield from _strings(body.response_format.model_extra or {})
    for key, value in (body.model_extra or {}).items():
        if key not in _NOT_BODY_TEXT:
            if _is_text(key):
                yield key
            yield from _strings(value)


def _setup_replaced(body: Any, replace: Replace) -> dict[str, Any]:
    update: dict[str, Any] = {}
    for name in _BODY_TEXT_FIELDS:
        value = getattr(body, name, None)
        if value is not None:
            update[name] = _replaced(value, replace)
    if isinstance(body, ChatCompletionRequest) and body.response_format is not None:
        extra = body.response_format.model_extra
        if extra:
            try:
                changed = _replaced(extra, replace)
            except _KeyChanged as error:
                raise _refused("response_format") from error
            update["response_format"] = body.response_format.model_copy(update=changed)
    for key, value in (body.model_extra or {}).items():
        if key not in _NOT_BODY_TEXT:
            try:
                key = _key(key, replace)  # before its value: the order _setup_strings lists them
                update[key] = _replaced(value, replace)
            except _KeyChanged as error:
                raise _refused(key) from error
    return update


def _refused(param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"A key in {param} (a property name?) holds text the guard policy redacts; a renamed key would change"
        " the answer's shape, so the request is refused. Move the value out of the key.",
        param=param,
        code="input_redacted_key",
    )


def texts(body: object, untrusted: frozenset[int] = frozenset()) -> list[tuple[str, str]]:
    """(role, text) of every piece of input text, in order; a message marked untrusted reads as ``tool``."""
    out: list[tuple[str, str]] = []
    if isinstance(body, ChatCompletionRequest):
        for index, message in enumerate(body.messages):
            # Retrieved content pasted into a user message is scanned as what it is: not the user's words.
            role = "tool" if index in untrusted and message.role in ("user", "system", "developer") else message.role
            if isinstance(message.content, str) and message.name is None and not message.model_extra:
                out.append((role, message.content))  # the common case, without the generator
            else:
                out.extend((role, text) for text in _message_strings(message))
    elif isinstance(body, CompletionRequest):
        out.append(("user", body.prompt_text()))
        if body.suffix is not None:
            out.append(("user", body.suffix))
    elif isinstance(body, EmbeddingRequest):
        inputs = [body.input] if isinstance(body.input, str) else body.input
        out.extend(("user", i) for i in inputs if isinstance(i, str))
    else:
        return out
    out.extend((_SETUP_ROLE, text) for text in _setup_strings(body))
    return out


def _feeder(items: list[str]) -> Replace:
    """A ``Replace`` that hands out ``items`` in order, whatever it is given."""
    pending = iter(items)
    return lambda _: next(pending)


def with_texts(body: Any, new: list[str]) -> Any:
    """A copy of ``body`` with its input texts replaced, in the order ``texts`` listed them."""
    pending = iter(new)

    def replace(_: str) -> str:
        return next(pending)

    update: dict[str, Any] = {}
    if isinstance(body, ChatCompletionRequest):
        messages = []
        for message in body.messages:
            before = list(_message_strings(message))
            after = [next(pending) for _ in before]
            if after == before:
                messages.append(message)  # unchanged: no copy
            else:
                try:
                    messages.append(_message_replaced(message, _feeder(after)))
                except _KeyChanged as error:
                    raise _refused(f"messages[{len(messages)}]") from error
        update["messages"] = messages
    elif isinstance(body, CompletionRequest):
        prompt = replace(body.prompt_text())
        update["prompt"] = prompt if isinstance(body.prompt, str) else [prompt]
        if body.suffix is not None:
            update["suffix"] = replace(body.suffix)
    else:
        assert isinstance(body, EmbeddingRequest)
        if isinstance(body.input, str):
            update["input"] = replace(body.input)
        else:
            update["input"] = [replace(i) if isinstance(i, str) else i for i in body.input]
    update.update(_setup_replaced(body, replace))
    return body.model_copy(update=update)


# Chat messages (0-based indexes) holding content the application fetched, not the user's words.
UNTRUSTED_HEADER = "x-opsgate-untrusted-messages"
_MESSAGE_INDEX = re.compile(r"[0-9]{1,6}")  # ASCII only: "²".isdigit() is true and int() refuses it


def untrusted_messages(headers: Mapping[str, str]) -> frozenset[int]:
    """Indexes of the chat messages the client marks as untrusted (``x-opsgate-untrusted-messages: 2,4``).

    A value that is not such a list is the client's mistake (a 400): ignoring it would scan as trusted
    the messages the client meant to mark.
    """
    value = headers.get(UNTRUSTED_HEADER)
    if not value:
        return frozenset()
    parts = [part for part in value.replace(" ", "").split(",") if part]
    if not all(_MESSAGE_INDEX.fullmatch(part) for part in parts):
        raise InvalidRequestError(
            f"{UNTRUSTED_HEADER} must list message indexes, like '2,4'.", param=UNTRUSTED_HEADER, code="invalid_header"
        )
    return frozenset(int(part) for part in parts)
