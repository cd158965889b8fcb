"""Dataset items: what one test case holds, how it is checked, and how versions are content-hashed.

An item is ``messages`` (or a ``prompt``), optional ``reference`` (one string or several), an
optional expected JSON ``schema`` and free ``metadata``. A dataset version is the ordered list of
its items; its hash is the SHA-256 over the items' own hashes, so the same content always gets the
same hash and a version can never change under a run that used it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_TEXT_CHARS = 200_000  # per message, prompt or reference
MAX_MESSAGES = 200
MAX_REFERENCES = 32
MAX_METADATA_BYTES = 16 * 1024
MAX_SCHEMA_BYTES = 64 * 1024
MAX_DEPTH = 32
_ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})
_KEYS = frozenset({"id", "messages", "prompt", "reference", "schema", "metadata"})


class ItemError(ValueError):
    """One problem with one item: ``field`` is the dotted path of what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class DatasetError(ValueError):
    """A dataset could not be read; ``problems`` name file, line and field of each bad item."""

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:20]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        super().__init__("; ".join(shown) + more)
        self.problems = problems


@dataclass(frozen=True)
class DatasetItem:
    """One test case. Exactly one of ``messages`` and ``prompt`` is set."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    reference: list[str] = field(default_factory=list)
    schema: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The item as stored and exported (empty parts left out)."""
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        if self.messages is not None:
            out["messages"] = self.messages
        else:
            out["prompt"] = self.prompt
        if self.reference:
            out["reference"] = self.reference if len(self.reference) > 1 else self.reference[0]
        if self.schema is not None:
            out["schema"] = self.schema
        if self.metadata:
            out["metadata"] = self.metadata
        return out

    def content_hash(self) -> str:
        """SHA-256 of the item's canonical JSON (sorted keys)."""
        return hashlib.sha256(orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()

    def input_hash(self) -> str:
        """SHA-256 of the input alone (messages or prompt): what 'duplicate' means for logs."""
        data = {"messages": self.messages} if self.messages is not None else {"prompt": self.prompt}
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def chat_messages(self) -> list[dict[str, str]]:
        """The conversation to send: the messages, or the prompt as one user message."""
        if self.messages is not None:
            return self.messages
        return [{"role": "user", "content": self.prompt or ""}]

    def input_text(self) -> str:
        """The input as plain text (for judges and reports)."""
        if self.messages is None:
            return self.prompt or ""
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)


def _text(value: Any, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ItemError(where, f"must be a string, not {_kind(value)}")
    if "\x00" in value:
        raise ItemError(where, "contains a NUL character")
    if len(value) > MAX_TEXT_CHARS:
        raise ItemError(where, f"is longer than {MAX_TEXT_CHARS} characters")
    if not empty and not value.strip():
        raise ItemError(where, "is empty")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", type(None): "null", int: "a number"}.get(
        type(value), "a number" if isinstance(value, float) else "a string" if isinstance(value, str) else "a value"
    )


def _check_tree(value: Any, where: str, depth: int = 0) -> None:
    """JSON values only: no NUL in strings, finite numbers, bounded nesting."""
    if depth > MAX_DEPTH:
        raise ItemError(where, f"nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ItemError(where, "contains a NUL character")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ItemError(where, "holds NaN or Infinity")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**63:
            raise ItemError(where, "holds an integer outside the 64-bit range")
    elif isinstance(value, list):
        for index, element in enumerate(value):
            _check_tree(element, f"{where}[{index}]", depth + 1)
    elif isinstance(value, dict):
        for key, element in value.items():
            if not isinstance(key, str) or "\x00" in key:
                raise ItemError(where, "has a key that is not a plain string")
            _check_tree(element, f"{where}.{key}", depth + 1)
    elif value is not None and not isinstance(value, bool):
        raise ItemError(where, f"holds {type(value).__name__}, which is not JSON")


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ItemError("messages", "must be a non-empty list of {role, content}")
    if len(value) > MAX_MESSAGES:
        raise ItemError("messages", f"has more than {MAX_MESSAGES} messages")
    out = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ItemError(where, f"must be an object, not {_kind(message)}")
        extra = sorted(set(message) - {"role", "content", "name"})
        if extra:
            raise ItemError(f"{where}.{extra[0]}", "is not a known field (role, content, name)")
        role = _text(message.get("role"), f"{where}.role")
        if role not in _ROLES:
            raise ItemError(f"{where}.role", f"must be one of {', '.join(sorted(_ROLES))}")
        content = _text(message.get("content"), f"{where}.content", empty=role == "assistant")
        out.append({"role": role, "content": content})
    return out


def parse_item(data: Any) -> DatasetItem:
    """Check one parsed item (a dict from JSON, CSV or Parquet); ItemError names the bad field."""
    if not isinstance(data, dict):
        raise ItemError("", f"an item must be an object, not {_kind(data)}")
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        raise ItemError(unknown[0], f"is not a known field ({', '.join(sorted(_KEYS))})")
    has_messages = data.get("messages") is not None
    has_prompt = data.get("prompt") is not None
    if has_messages == has_prompt:
        raise ItemError("messages", "give exactly one of messages and prompt")
    messages = _messages(data["messages"]) if has_messages else None
    prompt = _text(data["prompt"], "prompt") if has_prompt else None
    reference: list[str] = []
    raw = data.get("reference")
    if isinstance(raw, list):
        if len(raw) > MAX_REFERENCES:
            raise ItemError("reference", f"has more than {MAX_REFERENCES} references")
        reference = [_text(r, f"reference[{i}]", empty=True) for i, r in enumerate(raw)]
    elif raw is not None:
        reference = [_text(raw, "reference", empty=True)]
    schema = data.get("schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise ItemError("schema", f"must be a JSON schema object, not {_kind(schema)}")
        _check_tree(schema, "schema")
        if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
            raise ItemError("schema", f"is larger than {MAX_SCHEMA_BYTES} bytes")
        _check_schema(schema)
    metadata = data.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ItemError("metadata", f"must be an object, not {_kind(metadata)}")
    _check_tree(metadata, "metadata")
    if len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        raise ItemError("metadata", f"is larger than {MAX_METADATA_BYTES} bytes")
    item_id = data.get("id")
    if item_id is not None:
        if isinstance(item_id, int) and not isinstance(item_id, bool):
            item_id = str(item_id)
        item_id = _text(item_id, "id")[:200]
    return DatasetItem(messages, prompt, reference, schema, metadata, item_id)


def _check_schema(schema: dict[str, Any]) -> None:
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise ItemError("schema", f"is not a valid JSON schema: {error.message[:200]}") from None


def dataset_hash(items: list[DatasetItem]) -> str:
    """The version's content hash: SHA-256 over the items' hashes, in order."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.content_hash().encode())
    return digest.hexdigest()
