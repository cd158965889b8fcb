"""Reading an upstream's answer within bounds: a whole body by size, a stream event by shape.

An upstream is trusted to speak HTTP, not to be small or well typed: a body past
``max_response_bytes`` is refused before it is all in memory, and a stream event whose fields
the gateway reads (choices, delta, content, text) have the wrong types is refused before any
stage sees it, as the upstream's bad answer (502), never the gateway's own failure (500).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp


class LineTooLong(Exception):
    """A line (a stream event) went past the reader's limit; the rest of the body is left unread."""


async def read_lines(content: aiohttp.StreamReader, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's lines (newline kept; the last one may lack it), each at most ``limit`` bytes.

    Ours rather than ``StreamReader.readline``: its limit is twice the session's read buffer
    (512 KiB here) and only aiohttp >= 3.14 lets a caller set it; raising the buffer instead
    would let every connection buffer that much. A line's start is held as the pieces read, so
    a long event costs one join, not a copy per network read.
    """
    held: list[bytes] = []  # the current line's start, across reads (no newline in them)
    held_size = 0
    while True:
        part = await content.readany()
        if not part:
            if held:
                yield b"".join(held)
            return
        start = 0
        end = part.find(b"\n")
        while end >= 0:
            if held:
                held.append(part[start : end + 1])
                line = b"".join(held)
                held.clear()
                held_size = 0
            else:
                line = part[start : end + 1]
            if len(line) > limit:
                raise LineTooLong
            yield line
            start = end + 1
            end = part.find(b"\n", start)
        if start < len(part):
            held.append(part[start:] if start else part)
            held_size += len(part) - start
            if held_size > limit:
                raise LineTooLong


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole (decompressed) body, or None once it passes ``limit`` bytes; the rest is left unread."""
    if response.content_length is not None and response.content_length > limit:
        return None  # said up front: nothing to read
    content = response.content
    parts: list[bytes] = []
    size = 0
    while True:
        part = await content.readany()
        if not part:
            return b"".join(parts)
        size += len(part)
        if size > limit:
            return None
        parts.append(part)


def chunk_problem(chunk: object) -> str | None:
    """What makes a parsed stream event unusable, or None when the fields the gateway reads are typed right.

    The gateway reads ``choices[*].delta.content`` and ``choices[*].text`` (the record, the guard,
    the cache); everything else (tool calls, logprobs, finish reasons, usage) is relayed as sent and
    read defensively where it is read. ``type() is`` checks: orjson yields plain dicts and lists.
    """
    if type(chunk) is not dict:
        return "is not a JSON object"
    choices = chunk.get("choices")
    if choices is None:
        return None
    if type(choices) is not list:
        return "has choices that are not a list"
    for choice in choices:
        if type(choice) is not dict:
            return "has a choice that is not an object"
        delta = choice.get("delta")
        if delta is not None:
            if type(delta) is not dict:
                return "has a delta that is not an object"
            content = delta.get("content")
            if content is not None and type(content) is not str:
                return "has delta content that is not a string"
        text = choice.get("text")
        if text is not None and type(text) is not str:
            return "has text that is not a string"
    return None
