"""Config of the structural caps on inference bodies (``server.body_shape``), checked before validation.

Defaults follow OpenAI where it documents a limit (128 tools, metadata of 16 keys of at most 64
characters with values of at most 512, embeddings' 300,000 tokens per request); the rest are ours,
generous for real traffic and low enough that no body under them costs the event loop much.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BodyShapeConfig(_Strict):
    """How much structure one inference body may hold; past a cap the request is a 400 naming the field."""

    max_values: int = Field(
        50_000,
        ge=1_000,
        le=10_000_000,
        description=(
            "JSON values (objects, arrays, strings, numbers, literals; not keys) in one body. Bounds what"
            " building the request model costs (about 1 µs a value): a 4 MB body of 140k content parts"
            " took 0.5 s of the event loop. Token ids in an embeddings `input` count against"
            " max_embedding_tokens instead."
        ),
    )
    max_messages: int = Field(
        2048, ge=1, le=1_000_000, description="`messages` per chat request (Azure OpenAI refuses more than 2048)."
    )
    max_content_parts: int = Field(
        1024, ge=1, le=1_000_000, description="Parts in one message's `content` array (OpenAI: ≤ 500 images a request)."
    )
    max_tool_calls: int = Field(128, ge=1, le=1_000_000, description="`tool_calls` in one message (OpenAI: 128).")
    max_tools: int = Field(128, ge=1, le=1_000_000, description="`tools`, and the older `functions` (OpenAI: 128).")
    max_metadata_keys: int = Field(16, ge=1, le=100_000, description="Keys in `metadata` (OpenAI: 16).")
    max_metadata_key_chars: int = Field(
        64, ge=1, le=100_000, description="Characters in a `metadata` key (OpenAI: 64)."
    )
    max_metadata_value_chars: int = Field(
        512,
        ge=1,
        le=10_000_000,
        description="Characters in a `metadata` string value (OpenAI: 512); the prompt registry's `variables`"
        " object is not a string and is bounded by max_values.",
    )
    max_logit_bias: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Entries in `logit_bias` (OpenAI documents no cap; in 2023 it took at most 300).",
    )
    max_embedding_tokens: int = Field(
        300_000,
        ge=1,
        le=100_000_000,
        description="Token ids summed over an embeddings request's token-array `input` (OpenAI: 300,000).",
    )
