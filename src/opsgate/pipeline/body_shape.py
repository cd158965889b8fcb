"""Structural caps on an inference body, checked on its bytes before pydantic builds the request model.

pydantic spends about 1 µs per JSON value it turns into a model or container (3 µs per content part
or message): one 4 MB chat body of 140k tiny content parts held the event loop for 0.5 s, and six
at once stalled another client's chat for 5.3 s (outside probe 2026-12-06, finding 8). Parsing first
with orjson is no cure by itself: 4 MB of empty arrays costs orjson 0.3 s. So the check is in two
steps, each bounded:

1. An upper bound on the number of values: the body's length, then three byte counts (C speed,
   ~1 ms per MB); for a body over ``max_values`` by those, the same counts outside its strings when
   it has few (text full of commas and brackets). Only a body over the cap by all of them —
   structure-heavy — is scanned token by token (``_scan``), which stops at the first value past
   the cap.
2. The body, now known to be small in structure, is parsed with orjson and the fields OpenAI
   limits are measured (``messages``, ``tools``, ``metadata``, ...), naming the field as
   ``messages[3].content``.

Anything else wrong with a body (bad JSON, wrong types) is left to pydantic, which follows.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pydantic_core

from opsgate.domain.body_shape_config import BodyShapeConfig
from opsgate.domain.context import Endpoint
from opsgate.domain.errors import InvalidRequestError

# OpenAI's own limit, enforced by the request model too (domain/requests.py); here it is checked
# before the list is built.
MAX_EMBEDDING_INPUTS = 2048

_STRING = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_SCALAR_CHAR = rb'[^\s,:\[\]{}"]'
# One token per match; whitespace, commas and colons between tokens are skipped by the search in C.
# Numbers and literals come as runs (``1, 2, 3``) of up to 256 KiB, their items counted by their
# commas in C: a token-id array costs a few matches, not one per id. A run longer than that is cut
# where the 256 KiB end, and the item cut in two counts twice (one value too many per 256 KiB).
_TOKEN = re.compile(
    rb"(" + _STRING + rb")\s*+:"  # 1: an object key
    rb"|(" + _STRING + rb")"  # 2: a string value
    rb"|([\[{])"  # 3: an array or object opens
    rb"|([\]}])"  # 4: ... closes
    rb"|(" + _SCALAR_CHAR + rb'(?:[^:\[\]{}"]{0,262142}' + _SCALAR_CHAR + rb")?)"  # 5: scalars
)
_KEY, _STR, _OPEN, _CLOSE, _RUN = 1, 2, 3, 4, 5
_OBJECT = ord("{")
# A body with more quotes than this is measured by the scan, not by skipping its strings one by one.
_MAX_QUOTES = 20_000


def value_bound(raw: bytes) -> int:
    """At least the number of JSON values in ``raw`` (each container's items are its commas + 1)."""
    return raw.count(b",") + raw.count(b"[") + raw.count(b"{") + 1


def _structure(raw: bytes, start: int, end: int) -> int:
    return raw.count(b",", start, end) + raw.count(b"[", start, end) + raw.count(b"{", start, end)


def value_bound_outside_strings(raw: bytes, max_quotes: int) -> int | None:
    """Like ``value_bound`` but not counting what is inside strings; None past ``max_quotes`` quotes.

    For a body of a few long texts full of commas and brackets (a pasted document or code): the
    strings are skipped with ``bytes.find`` (C speed, ~0.1 ms per MB), one Python step per quote.
    """
    if raw.count(b'"') > max_quotes:
        return None
    bound, outside, at = 1, 0, raw.find(b'"')
    while at != -1:
        bound += _structure(raw, outside, at)
        close = raw.find(b'"', at + 1)
        while close != -1 and _escaped(raw, close):
            close = raw.find(b'"', close + 1)
        if close == -1:
            return None  # an unterminated string: not JSON
        outside = close + 1
        at = raw.find(b'"', outside)
    return bound + _structure(raw, outside, len(raw))


def _escaped(raw: bytes, quote: int) -> bool:
    """Whether the quote at ``quote`` follows an odd run of backslashes."""
    run = 0
    while quote - run - 1 >= 0 and raw[quote - run - 1] == 92:  # backslash
        run += 1
    return run % 2 == 1


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def _key_text(key: bytes | None) -> str:
    try:
        text = orjson.loads(key) if key is not None else "?"
    except orjson.JSONDecodeError:
        text = key.decode("latin-1") if key is not None else "?"
    return text if isinstance(text, str) else "?"


class _Stack:
    """Where the scan is: for each open container its kind, items so far and last key."""

    __slots__ = ("counts", "keys", "kinds")

    def __init__(self) -> None:
        self.kinds: list[int] = [0]  # level 0 is outside the root value
        self.counts: list[int] = [0]
        self.keys: list[bytes | None] = [None]

    def position(self, level: int) -> str | int | None:
        """The key or index of the value opened at ``level`` within its container (None for the root)."""
        parent = level - 1
        if parent < 1:
            return None
        if self.kinds[parent] == _OBJECT:
            return _key_text(self.keys[parent])
        return self.counts[parent] - 1

    def path(self, level: int) -> str:
        """The dotted path of the container open at ``level``."""
        out = ""
        for at in range(2, level + 1):
            part = self.position(at)
            if part is not None:
                out = _join(out, part)
        return out


def _too_many(path: str, held: int, cap: int) -> InvalidRequestError:
    param = path or None
    where = f"'{path}'" if path else "the body"
    return InvalidRequestError(
        f"Invalid {where}: the request body holds more than {cap} JSON values (objects, arrays, strings,"
        f" numbers), the most this gateway reads in one request; {where} alone holds {held} or more.",
        param=param,
        code="too_many_values",
    )


def _scan(raw: bytes, max_values: int, max_tokens: int | None) -> None:
    """Count values token by token and raise once past ``max_values``: work stops at the cap.

    With ``max_tokens`` (embeddings), numbers under the top-level ``input`` are token ids and count
    against it instead. A body that is not JSON is scanned as far as it makes sense and left to the
    parser that follows.
    """
    stack = _Stack()
    kinds, counts, keys = stack.kinds, stack.counts, stack.keys
    depth = 0
    values = tokens = 0
    for match in _TOKEN.finditer(raw):
        kind = match.lastindex
        if kind == _KEY:
            keys[depth] = match.group(1)
            continue
        if kind == _CLOSE:
            depth -= 1
            if depth < 0:
                return  # more closers than openers: not JSON
            continue
        if kind == _RUN:
            items = raw.count(b",", match.start(), match.end()) + 1
            if max_tokens is not None and depth >= 1 and keys[1] == b'"input"':
                tokens += items
                if tokens > max_tokens:
                    raise _token_error(max_tokens)
                continue
        else:
            items = 1
        counts[depth] += items
        values += items
        if kind == _OPEN:
            depth += 1
            if depth == len(kinds):
                kinds.append(0)
                counts.append(0)
                keys.append(None)
            kinds[depth] = raw[match.start()]
            counts[depth] = 0
            keys[depth] = None
        if values > max_values:
            level = max(range(1, depth + 1), key=counts.__getitem__, default=0)
            raise _too_many(stack.path(level) if level else "", counts[level] if level else values, max_values)


def _token_error(cap: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid 'input': the token arrays hold more than {cap} token ids, the most one request may send.",
        param="input",
        code="too_many_tokens",
    )


def _too_long(param: str, length: int, cap: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid '{param}': array too long. Expected an array with maximum length {cap},"
        f" but got an array with length {length} instead.",
        param=param,
        code="array_above_max_length",
    )


def _too_many_properties(param: str, size: int, cap: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid '{param}': too many properties. Expected an object with at most {cap} properties,"
        f" but got an object with {size} properties instead.",
        param=param,
        code="object_above_max_properties",
    )


def _string_too_long(param: str, what: str, length: int, cap: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid '{param}': {what} is too long. Expected a string with maximum length {cap},"
        f" but got a string with length {length} instead.",
        param=param,
        code="string_above_max_length",
    )


def _parse(raw: bytes) -> Any:
    """The body as Python values, or None if it is not JSON (pydantic then says why)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    # What orjson refuses and pydantic's parser takes (NaN, integers past 64 bits, lone surrogates)
    # is still measured, so such a value cannot carry an oversized field past the caps.
    try:
        return pydantic_core.from_json(raw)
    except ValueError:
        return None


class BodyShape:
    """Checks an inference body's structure against ``server.body_shape`` before it is validated."""

    def __init__(self, config: BodyShapeConfig) -> None:
        self.config = config

    def check(self, raw: bytes, endpoint: Endpoint) -> None:
        """Raise a 400 naming the field if ``raw`` is over a cap; otherwise return (pydantic judges the rest)."""
        limits = self.config
        cap = limits.max_values
        # Every value takes at least one byte, so a body of at most ``cap`` bytes needs no counting.
        if len(raw) > cap and value_bound(raw) > cap:
            bound = value_bound_outside_strings(raw, _MAX_QUOTES)
            if bound is None or bound > cap:
                _scan(raw, cap, limits.max_embedding_tokens if endpoint == "embedding" else None)
        body = _parse(raw)
        if not isinstance(body, dict):
            return
        if endpoint == "embedding":
            self._embedding(body)
            return
        self._sampling(body)
        if endpoint == "chat":
            self._chat(body)

    def _sampling(self, body: dict[str, Any]) -> None:
        """What chat and legacy completions share: ``metadata`` and ``logit_bias``."""
        limits = self.config
        metadata = body.get("metadata")
        if isinstance(metadata, dict):
            if len(metadata) > limits.max_metadata_keys:
                raise _too_many_properties("metadata", len(metadata), limits.max_metadata_keys)
            for key, value in metadata.items():
                if len(key) > limits.max_metadata_key_chars:
                    raise _string_too_long("metadata", "a key", len(key), limits.max_metadata_key_chars)
                if isinstance(value, str) and len(value) > limits.max_metadata_value_chars:
                    raise _string_too_long(f"metadata.{key}", "string", len(value), limits.max_metadata_value_chars)
        bias = body.get("logit_bias")
        if isinstance(bias, dict) and len(bias) > limits.max_logit_bias:
            raise _too_many_properties("logit_bias", len(bias), limits.max_logit_bias)

    def _chat(self, body: dict[str, Any]) -> None:
        limits = self.config
        for field in ("tools", "functions"):
            items = body.get(field)
            if isinstance(items, list) and len(items) > limits.max_tools:
                raise _too_long(field, len(items), limits.max_tools)
        messages = body.get("messages")
        if not isinstance(messages, list):
            return
        if len(messages) > limits.max_messages:
            raise _too_long("messages", len(messages), limits.max_messages)
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, list) and len(content) > limits.max_content_parts:
                raise _too_long(f"messages[{index}].content", len(content), limits.max_content_parts)
            calls = message.get("tool_calls")
            if isinstance(calls, list) and len(calls) > limits.max_tool_calls:
                raise _too_long(f"messages[{index}].tool_calls", len(calls), limits.max_tool_calls)

    def _embedding(self, body: dict[str, Any]) -> None:
        items = body.get("input")
        if not isinstance(items, list):
            return
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise _too_long("input", len(items), MAX_EMBEDDING_INPUTS)
        tokens = sum(len(item) if isinstance(item, list) else 1 for item in items if not isinstance(item, str))
        if tokens > self.config.max_embedding_tokens:
            raise _token_error(self.config.max_embedding_tokens)
