"""A client's ``json_schema`` turned into a llama.cpp grammar, or a 400 naming ``response_format``.

llama-cpp-python converts a schema to GBNF in Python and llama.cpp parses the GBNF in C when the
sampler is built. Both fail on schemas a client can send (``{"$ref": "#"}``, a regex feature the
converter lacks, a non-object schema), and a GBNF that C refuses yields a NULL sampler that would be
added to the sampler chain. Whatever the engine cannot compile is the client's mistake, so it is
converted here before the request waits for the model, and parsed again on the model's thread
(``LlamaEngine``) before generation; neither failure ever counts against the deployment.
"""

from __future__ import annotations

import json
import re
from typing import Any

from opsgate.domain.errors import InvalidRequestError

MAX_SCHEMA_BYTES = 32 * 1024  # real response schemas are a few KB
MAX_GRAMMAR_BYTES = 256 * 1024
MAX_REPEAT = 1000  # minLength, maxItems, {n,m} in patterns: the converter unrolls them
_REPEAT_KEYS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_PATTERN_COUNTS = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def schema_error(reason: str) -> InvalidRequestError:
    """The 400 every unusable schema gets."""
    return InvalidRequestError(
        f"Invalid value for 'response_format': the JSON schema cannot be used for constrained output: {reason}.",
        param="response_format",
        code="invalid_json_schema",
    )


def _check_bounds(node: Any) -> None:
    """Reject repetition counts the converter would unroll into an unbounded grammar."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key in _REPEAT_KEYS:
                count = item.get(key)
                if isinstance(count, int) and not isinstance(count, bool) and count > MAX_REPEAT:
                    raise schema_error(f"{key} {count} is above {MAX_REPEAT}")
            pattern = item.get("pattern")
            if isinstance(pattern, str):
                for match in _PATTERN_COUNTS.finditer(pattern):
                    if any(n and int(n) > MAX_REPEAT for n in match.groups()):
                        raise schema_error(f"a repetition in pattern exceeds {MAX_REPEAT}")
            stack.extend(item.values())


def schema_to_grammar(schema: object) -> str:
    """The GBNF grammar for ``schema``; raises a 400 (``param: response_format``) if there is none."""
    if not isinstance(schema, dict):
        raise schema_error("response_format.json_schema.schema must be a JSON object")
    text = json.dumps(schema)
    if len(text) > MAX_SCHEMA_BYTES:
        raise schema_error(f"the schema is larger than {MAX_SCHEMA_BYTES} bytes")
    _check_bounds(schema)
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = str(json_schema_to_gbnf(text))
    except Exception as error:  # the converter asserts, raises Key/Value/Attribute/RecursionError
        raise schema_error(f"{type(error).__name__}: {str(error)[:200]}") from None
    if len(grammar) > MAX_GRAMMAR_BYTES:
        raise schema_error(f"its grammar would exceed {MAX_GRAMMAR_BYTES} bytes")
    return grammar
