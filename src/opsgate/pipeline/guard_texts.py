"""Every piece of text in a request that reaches the model, for the input scanners, and back in place.

``texts`` lists ``(role, text)`` pairs in a fixed order; ``with_texts`` takes the (possibly redacted)
texts in that same order and puts each back where it came from. Both walk the body with the same
rules, so the order cannot drift apart.

What is text (probe-guard finding 3: fields that reached the upstream unscanned):

- a chat message: its ``content`` (a string, or every string inside every content part whatever
  its ``type``: ``text``, ``input_text``, ``refusal``, an ``image_url``'s URL …), its ``name``, and
  every string in any other key it carries (``tool_calls[].function.arguments``,
  ``function_call.arguments``, a vendor's extra key). Role: the message's (a message the client
  marks untrusted reads as ``tool``);
- the completions ``prompt`` and ``suffix`` (role ``user``); embedding inputs (``user``);
- everything else in the body that is forwarded — ``tools`` (descriptions, parameter
  descriptions), ``response_format`` (the JSON schema's descriptions), ``stop``, ``user``,
  ``prediction`` and any unknown key (vLLM's ``chat_template``, ``documents``, ``guided_json`` …) —
  with role ``developer``: the application's setup of the request, like a system prompt. The data
  scanners (PII, secrets, banned terms: all roles by default) read it; the injection scanner does
  only if the operator adds ``developer`` to its ``roles``.

Never text: the values of ``type``, ``id`` and ``tool_call_id`` (an identifier rewritten would
unlink a tool result from its call), base64 payloads (``data``, ``file_data`` and ``data:`` URLs:
an image is not prose, and scanning megabytes of base64 would cost for nothing), keys (a JSON
schema's property names) and non-strings. ``model``, ``messages`` (walked above) and ``metadata``
(the gateway's own, not forwarded) are not walked as body text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from opsgate.domain.requests import ChatCompletionRequest, ChatMessage, CompletionRequest, EmbeddingRequest

_NOT_TEXT_KEYS = frozenset({"type", "id", "tool_call_id", "data", "file_data"})
# Body fields that are not forwarded text, or are walked on their own.
_NOT_BODY_TEXT = frozenset({"model", "messages", "metadata", "prompt", "suffix", "input"})
_BODY_TEXT_FIELDS = ("user", "stop")  # declared string fields forwarded as they are
_SETUP_ROLE = "developer"

Replace = Callable[[str], str]


def _is_payload(text: str) -> bool:
    return text.startswith("data:") and ";base64," in text[:200]


def _strings(value: Any) -> Iterator[str]:
    """Every text string in a JSON value, depth first, dict order."""
    if isinstance(value, str):
        if not _is_payload(value):
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _NOT_TEXT_KEYS:
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _replaced(value: Any, replace: Replace) -> Any:
    """``value`` with each string ``_strings`` lists replaced (same walk, same order)."""
    if isinstance(value, str):
        return value if _is_payload(value) else replace(value)
    if isinstance(value, dict):
        return {key: item if key in _NOT_TEXT_KEYS else _replaced(item, replace) for key, item in value.items()}
    if isinstance(value, list):
        return [_replaced(item, replace) for item in value]
    return value


def _message_strings(message: ChatMessage) -> Iterator[str]:
    content = message.content
    if isinstance(content, str):
        yield content
    elif content:
        for part in content:
            if part.text is not None:
                yield part.text
            if part.model_extra:
                yield from _strings(part.model_extra)
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
            if part.text is not None:
                changes["text"] = replace(part.text)
            if part.model_extra:
                changes.update(_replaced(part.model_extra, replace))
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
        if key not in _NOT_BODY_TEXT and key not in _NOT_TEXT_KEYS:
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
            update["response_format"] = body.response_format.model_copy(update=_replaced(extra, replace))
    for key, value in (body.model_extra or {}).items():
        if key not in _NOT_BODY_TEXT and key not in _NOT_TEXT_KEYS:
            update[key] = _replaced(value, replace)
    return update


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
                messages.append(_message_replaced(message, _feeder(after)))
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
