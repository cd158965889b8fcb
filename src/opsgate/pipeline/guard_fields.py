"""The text of an answer outside its content: tool-call arguments, a legacy function call's, a refusal.

The output guard scanned only ``content`` (probe-guard finding 7): a model could hand PII or a secret
to the client in ``tool_calls[].function.arguments`` or ``refusal``. These helpers list those texts
(a stream's fragments joined per tool call) and put the scanned texts back where they were; the stage
runs the data scanners (PII, secrets, banned terms) over them. In a stream the deltas carrying them are
held to the end — a fragment of arguments is not something a scanner can judge — and released with
each field's whole scanned text in its first delta and empty strings in the rest (clients concatenate).

The fields must be typed as the OpenAI schema has them (``problem``): ``tool_calls`` a list of objects,
``arguments`` and ``refusal`` strings, and in a stream each tool-call delta an integer ``index`` (the
only way to tell a second call from more of the first). Anything else is the upstream's bad answer —
502 ``upstream_bad_response``, as ``backends.upstream_read.chunk_problem`` has ill-typed content — and
never passes unscanned (probe-new L1, L2: arguments as an object reached the client raw; index-less
deltas of two calls were joined into one).
"""

from __future__ import annotations

import json
from typing import Any

from opsgate.domain.context import Chunk
from opsgate.guard.base import Vault
from opsgate.guard.pii import restore as restored

# The output scanners that judge data, whatever field it is in (the others judge the content as prose
# or as the JSON asked for).
DATA_SCANNERS = frozenset({"pii", "secrets", "banned_terms"})
_ARGUMENTS = "arguments"

Key = tuple[str, int]


def problem(delta: dict[str, Any], stream: bool) -> str | None:
    """What makes a message's or delta's tool calls, function call or refusal ill-typed, or None."""
    calls = delta.get("tool_calls")
    if calls is not None:
        if type(calls) is not list:
            return "has tool_calls that are not a list"
        for call in calls:
            if type(call) is not dict:
                return "has a tool call that is not an object"
            if stream and type(call.get("index")) is not int:
                return "has a tool call delta without an integer index"
            wrong = _function_problem(call.get("function"))
            if wrong is not None:
                return wrong
    function_call = delta.get("function_call")
    if function_call is not None:
        wrong = _function_problem(function_call)
        if wrong is not None:
            return wrong
    refusal = delta.get("refusal")
    if refusal is not None and type(refusal) is not str:
        return "has a refusal that is not a string"
    return None


def _function_problem(function: Any) -> str | None:
    if function is None:
        return None
    if type(function) is not dict:
        return "has a function call that is not an object"
    arguments = function.get(_ARGUMENTS)
    if arguments is not None and type(arguments) is not str:
        return "has function arguments that are not a string"
    return None


def _fields(delta: dict[str, Any]) -> list[tuple[Key, dict[str, Any], str]]:
    """(field key, the dict holding the text, the text's key in it) of a message or a delta."""
    out: list[tuple[Key, dict[str, Any], str]] = []
    if isinstance(delta.get("refusal"), str):
        out.append((("refusal", 0), delta, "refusal"))
    calls = delta.get("tool_calls")
    for position, call in enumerate(calls if isinstance(calls, list) else ()):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get(_ARGUMENTS), str):
            index = call.get("index", position)
            out.append((("tool", index if isinstance(index, int) else position), function, _ARGUMENTS))
    function_call = delta.get("function_call")
    if isinstance(function_call, dict) and isinstance(function_call.get(_ARGUMENTS), str):
        out.append((("function_call", 0), function_call, _ARGUMENTS))
    return out


def carries_fields(delta: dict[str, Any]) -> bool:
    """Whether a message or delta has a refusal or arguments."""
    return bool(_fields(delta))


def texts(deltas: list[dict[str, Any]]) -> dict[Key, str]:
    """Each field's whole text, fragments joined in order."""
    out: dict[Key, str] = {}
    for delta in deltas:
        for key, holder, name in _fields(delta):
            out[key] = out.get(key, "") + holder[name]
    return out


def put_back(deltas: list[dict[str, Any]], new: dict[Key, str], restore: Vault) -> None:
    """Each field's scanned text into its first delta, empty strings into the others; the user's own
    values restored (JSON-escaped inside arguments, which are JSON text)."""
    escaped = Vault()
    escaped.originals = {token: json.dumps(value)[1:-1] for token, value in restore.originals.items()}
    done: set[Key] = set()
    for delta in deltas:
        for key, holder, name in _fields(delta):
            if key in done:
                holder[name] = ""
                continue
            done.add(key)
            text = new.get(key, holder[name])
            holder[name] = restored(text, escaped if name == _ARGUMENTS else restore) if restore else text


def chunk_delta(chunk: Chunk) -> dict[str, Any]:
    """The delta of a stream chunk's first choice ({} if none)."""
    choices = chunk.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    delta = first.get("delta")
    return delta if isinstance(delta, dict) else {}
