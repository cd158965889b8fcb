"""The OpenAI request bodies the gateway accepts, validated with pydantic.

Unknown fields are kept (``extra="allow"``) so vendor extensions pass through to an upstream;
known fields are checked so a client mistake is a 400 naming the field, not a failure later. Integer
fields are strict, as OpenAI's are: ``max_tokens: true`` or ``"5"`` is a 400, not a silent 1 or 5.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Past any real model name. The record keeps the model in an indexed column, and PostgreSQL refuses an
# index entry of more than ~2.7 KB: one request naming a 9,000-character model stalled every record.
MODEL_NAME_MAX = 256
# Candidates an upstream generates for one answer (``best_of``; vLLM takes it on chat too, with
# ``use_beam_search`` as the beam width): OpenAI's cap on /v1/completions, on every endpoint.
BEST_OF_MAX = 20


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")
    # Declared (not left to ``extra``) to be type-checked here; whether a client may choose them is the
    # alias's (``ModelAlias.client_service_tiers`` / ``client_priorities``, checked by validation).
    service_tier: str | None = None
    priority: int | None = Field(None, strict=True)


class ContentPart(BaseModel):
    """One part of a multi-part message content (text only is served by the embedded model)."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text, joining text parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(BaseModel):
    """``stream_options``: only ``include_usage`` means anything today."""

    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ResponseFormat(BaseModel):
    """``response_format``: ``text``, ``json_object`` or ``json_schema``."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]


class _Sampling(_Body):
    model: str = Field(min_length=1, max_length=MODEL_NAME_MAX)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1, strict=True)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, strict=True)
    n: int | None = Field(None, ge=1, le=1, strict=True, description="Only n=1 is served.")
    # The upstream generates best_of answers and returns one: bounded, and the limits count them all.
    best_of: int | None = Field(None, ge=1, le=BEST_OF_MAX, strict=True)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    user: str | None = Field(None, max_length=256)
    # Strings, as OpenAI has them; an object only for the prompt registry's ``variables``.
    metadata: dict[str, str | dict[str, Any]] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_limits(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _Sampling:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def stop_list(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        """Whether the client asked for the final usage chunk of a stream."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def candidates(self) -> int:
        """How many answers the upstream generates (and bills) for this request; one or ``n`` are returned."""
        return max(self.best_of or 1, self.n or 1)


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, strict=True)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20, strict=True)
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    def token_limit(self) -> int | None:
        """The output token limit: ``max_completion_tokens`` wins over the older ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    """``POST /v1/completions`` (the legacy text completion API)."""

    prompt: str | list[str] = Field(description="One prompt; a list of one string is accepted.")
    logprobs: int | None = Field(None, ge=0, le=5, strict=True)
    echo: bool | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("exactly one prompt is served per request")
        return prompt

    def prompt_text(self) -> str:
        """The single prompt string."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def token_limit(self) -> int | None:
        """The output token limit (the legacy API defaults to 16 like OpenAI)."""
        return self.max_tokens if self.max_tokens is not None else 16


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings``."""

    model: str = Field(min_length=1, max_length=MODEL_NAME_MAX)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, strict=True)
    user: str | None = Field(None, max_length=256)

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be empty")
        if isinstance(value, list) and len(value) > 2048:
            raise ValueError("at most 2048 inputs per request")
        return value


RequestBody = ChatCompletionRequest | CompletionRequest | EmbeddingRequest
