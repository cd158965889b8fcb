"""Config for the behaviour-change sentinel (``sentinel:``).

Golden prompts per alias, run on a schedule at temperature 0 with a fixed seed against every
deployment of the alias, compared with a stored baseline (``drift/sentinel_*.py``, ``docs/sentinel.md``)::

    sentinel:
      enabled: true
      interval_seconds: 3600
      models:
        gpt-4o:
          prompts:
            - {id: capital, prompt: "What is the capital of France? One word."}
          dataset: golden-gpt4o        # and/or an evaluation dataset (name or name@version)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

MAX_PROMPTS = 50  # golden prompts per alias (inline plus dataset items): each costs a call per deployment per run
MAX_PROMPT_CHARS = 8000
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class GoldenMessage(_Strict):
    """One chat message of a golden prompt."""

    role: str = Field(pattern=r"^(system|developer|user|assistant)$")
    content: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)

    @field_validator("content")
    @classmethod
    def _clean(cls, value: str) -> str:
        _no_nul(value)
        return value


class GoldenPrompt(_Strict):
    """A prompt whose answer should not change: ``prompt`` (one user message) or ``messages``."""

    id: str = Field(pattern=_ID, description="Stable name: baselines are kept per (alias, deployment, id).")
    prompt: str | None = Field(None, min_length=1, max_length=MAX_PROMPT_CHARS)
    messages: list[GoldenMessage] | None = Field(None, min_length=1, max_length=16)
    max_tokens: int | None = Field(None, ge=1, le=4096, description="Overrides sentinel.max_tokens.")

    @field_validator("prompt")
    @classmethod
    def _clean(cls, value: str | None) -> str | None:
        return _no_nul(value)

    @model_validator(mode="after")
    def _one_form(self) -> GoldenPrompt:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        return self

    def chat_messages(self) -> list[dict[str, str]]:
        """The messages sent."""
        if self.messages is not None:
            return [{"role": m.role, "content": m.content} for m in self.messages]
        assert self.prompt is not None
        return [{"role": "user", "content": self.prompt}]


class SentinelAlias(_Strict):
    """The golden prompts of one alias."""

    prompts: list[GoldenPrompt] = Field(default_factory=list, max_length=MAX_PROMPTS)
    dataset: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="An evaluation dataset of the operator (tenant null), 'name' or 'name@version'.",
    )
    dataset_items: int = Field(20, ge=1, le=MAX_PROMPTS, description="At most this many items of the dataset.")
    deployments: list[str] | None = Field(
        None, max_length=64, description="Labels (alias#index) to watch; None: every deployment of the alias."
    )

    @field_validator("dataset")
    @classmethod
    def _clean(cls, value: str | None) -> str | None:
        return _no_nul(value)

    @model_validator(mode="after")
    def _has_prompts(self) -> SentinelAlias:
        if not self.prompts and self.dataset is None:
            raise ValueError("give prompts, a dataset, or both")
        ids = [p.id for p in self.prompts]
        if len(ids) != len(set(ids)):
            raise ValueError("golden prompt ids must be unique per alias")
        return self


class SentinelConfig(_Strict):
    """Golden prompts run on a schedule against every deployment, compared with a stored baseline."""

    enabled: bool = False
    interval_seconds: float = Field(3600.0, ge=10, le=7 * 86400, description="Time between scheduled runs.")
    jitter_seconds: float = Field(
        60.0, ge=0, le=86400, description="Random extra delay, so replicas and aliases spread."
    )
    first_run_seconds: float = Field(30.0, ge=0, le=86400, description="Delay of the first run after start.")
    seed: int = Field(1234, ge=0, le=2**31 - 1, description="Sent with every call (temperature is always 0).")
    max_tokens: int = Field(128, ge=1, le=4096)
    timeout_seconds: float = Field(60.0, gt=0, le=600, description="Per call.")
    similarity_threshold: float = Field(
        0.9, gt=0, le=1, description="An answer whose embedding cosine to its baseline is below this has changed."
    )
    min_changed_prompts: int = Field(
        1, ge=1, le=MAX_PROMPTS, description="K: a deployment changed behaviour when at least K answers changed."
    )
    api_key: SecretStr | None = Field(
        None, description="An operator admin key for the sentinel's calls when auth is on (else auth.admin_key)."
    )
    embedding_model: str | None = Field(None, max_length=1000, description="MiniLM directory; None: the bundled one.")
    lease_seconds: float = Field(120.0, ge=10, le=3600, description="The schedule's lease: one replica runs it.")
    keep_runs: int = Field(10_000, ge=10, le=10_000_000, description="Older runs (and their items) are deleted.")
    models: dict[str, SentinelAlias] = Field(default_factory=dict, max_length=100)

    @model_validator(mode="after")
    def _models_when_enabled(self) -> SentinelConfig:
        if self.enabled and not self.models:
            raise ValueError("sentinel.enabled needs sentinel.models (the golden prompts per alias)")
        return self
