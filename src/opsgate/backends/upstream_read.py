"""Reading an upstream's stream events by shape.

A stream event whose fields the gateway reads (choices, delta, content, text) have the wrong types
is refused before any stage sees it, as the upstream's bad answer (502), never the gateway's own
failure (500).
"""

from __future__ import annotations


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
