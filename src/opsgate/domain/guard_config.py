"""Config for the guardrails: which scanners run on a request's input and its output, and what a hit does.

A policy applies to model aliases and/or tenants (empty lists match all); the most specific
matching policy wins. Each scanner entry names its scanner, a threshold on its 0-1 risk score and
an action: ``block`` (400 on input, 422 on output), ``redact`` (replace what it found), ``warn``
(``x-opsgate-guard-warn`` header) or ``log`` (only the record). Scanner options are checked per
scanner, so a typo is a config error at start, not a silent no-op.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Action = Literal["block", "redact", "warn", "log"]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
PiiEntity = Literal[
    "email",
    "phone",
    "credit_card",
    "iban",
    "us_ssn",
    "us_itin",
    "uk_nino",
    "es_dni",
    "it_fiscal_code",
    "in_aadhaar",
    "ip_address",
    "date_of_birth",
    "age",
    "street_address",
    # Found by a learned recogniser (``ner``: fast linear model or spaCy), not by patterns alone:
    "person",
    "location",
    "organization",
]
PII_ENTITIES: tuple[PiiEntity, ...] = get_args(PiiEntity)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ScannerBase(_Strict):
    action: Action = "block"
    threshold: float = Field(0.5, ge=0, le=1, description="A score at or above this is a hit.")

    #: Whether the scanner can rewrite text (so ``redact`` means something).
    can_redact: ClassVar[bool] = False

    @model_validator(mode="after")
    def _redact_needs_sanitizer(self) -> _ScannerBase:
        if self.action == "redact" and not self.can_redact:
            raise ValueError(f"scanner '{getattr(self, 'scanner', '?')}' cannot redact; use block, warn or log")
        return self


def _user_only() -> list[Role]:
    return ["user"]


class PiiScannerConfig(_ScannerBase):
    """Personal data: emails, phones, cards (Luhn), IBANs (checksum), national ids, IP addresses, marked
    dates of birth and ages, street addresses (patterns); names, places and organisations (``ner``).

    National ids: US SSN and ITIN, UK National Insurance number, Spanish DNI/NIE, Italian codice
    fiscale, Indian Aadhaar (Verhoeff) — each validated by its own rules (python-stdnum).
    """

    scanner: Literal["pii"]
    action: Action = "redact"
    entities: list[PiiEntity] = Field(default_factory=lambda: list(PII_ENTITIES))
    reversible: bool = Field(
        False, description="Input only: placeholders go to the model and are restored in its answer."
    )
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR"], description="Regions tried for numbers without +country."
    )
    roles: list[Role] | None = Field(None, description="Input messages to scan; default: all.")
    restore_roles: list[Role] = Field(
        default_factory=_user_only,
        description="reversible: the answer gets back only values that came from these roles' messages; "
        "others (operator data in a system prompt, retrieved records in tool messages) stay placeholders.",
    )
    names_on_output: bool = Field(
        False,
        description="Also look for person, location and organization names in answers (off: answers name "
        "public people, places and firms — 'The capital of France is Paris' — and the user's own names come "
        "back through reversible placeholders anyway).",
    )
    ner: Literal["fast", "spacy", "off"] = Field(
        "fast",
        description="Recogniser for person, location and organization: 'fast' (a linear model over capitalised "
        "words, ~0.2 ms per KB, in the request path), 'spacy' (en_core_web_sm, ~10-40 ms per KB, off the event "
        "loop, bounded by ner_budget_ms), 'off' (legal forms, cue words and address towns only).",
    )
    ner_budget_ms: float = Field(
        250.0,
        gt=0,
        description="ner: spacy only: time for the model per text; past it, the rest of the text gets the "
        "patterns only and the record says ner_unread_chars.",
    )
    can_redact: ClassVar[bool] = True

    @model_validator(mode="after")
    def _reversible_redacts(self) -> PiiScannerConfig:
        if self.reversible and self.action != "redact":
            raise ValueError("reversible needs action: redact")
        if "restore_roles" in self.model_fields_set and not self.reversible:
            raise ValueError("restore_roles needs reversible: true")
        return self


class InjectionScannerConfig(_ScannerBase):
    """Prompt injection and jailbreak: weighted patterns over normalised text, decoded payloads included, and a
    learned classifier (word, character and multilingual-concept features; max over windows of long texts)."""

    scanner: Literal["prompt_injection"]
    roles: list[Role] | None = Field(None, description="Input messages to scan; default: user, tool, function.")
    learned: bool = Field(True, description="Combine the learned detector's score with the signal rules.")
    tool_threshold: float = Field(
        0.5, ge=0, le=1, description="Threshold for tool and function messages (retrieved content: indirect injection)."
    )


class SecretsScannerConfig(_ScannerBase):
    """API keys, private keys, tokens and passwords, from detect-secrets' maintained plugins."""

    scanner: Literal["secrets"]
    action: Action = "redact"
    roles: list[Role] | None = None
    can_redact: ClassVar[bool] = True


class BannedTermsScannerConfig(_ScannerBase):
    """Banned words or phrases (whole words, case-insensitive) and banned topics (sets of keywords)."""

    scanner: Literal["banned_terms"]
    terms: list[str] = Field(default_factory=list)
    topics: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Topic name → keywords; each distinct keyword scores 0.25 (two reach the default threshold).",
    )
    roles: list[Role] | None = None
    can_redact: ClassVar[bool] = True

    @model_validator(mode="after")
    def _something_to_ban(self) -> BannedTermsScannerConfig:
        if not self.terms and not self.topics:
            raise ValueError("banned_terms needs terms or topics")
        return self


class InputSizeScannerConfig(_ScannerBase):
    """The whole input's size, in characters."""

    scanner: Literal["input_size"]
    max_chars: int = Field(32_000, gt=0)


class ToxicityScannerConfig(_ScannerBase):
    """Profanity and insults: alt-profanity-check's linear model, exported to numpy (no scikit-learn)."""

    scanner: Literal["toxicity"]
    threshold: float = Field(0.8, ge=0, le=1)


class SystemPromptLeakScannerConfig(_ScannerBase):
    """The answer repeats the request's system message (fuzzy match over its sentences)."""

    scanner: Literal["system_prompt_leak"]
    threshold: float = Field(0.5, ge=0, le=1, description="Share of the system prompt's text found in the answer.")
    min_chars: int = Field(20, ge=1, description="Shorter system prompts are not checked.")


class JsonScannerConfig(_ScannerBase):
    """When the request asked for ``json_object`` or ``json_schema``: the answer parses (and fits the schema)."""

    scanner: Literal["json"]


class ConfidenceScannerConfig(_ScannerBase):
    """Knowledge-limit detection from token logprobs: score = 1 - geometric-mean token probability.

    The default threshold 0.75 is a mean token logprob below about -1.39; a run of ``max_low_span``
    tokens below ``low_token_logprob`` is a hit too.
    """

    scanner: Literal["confidence"]
    action: Action = "warn"
    threshold: float = Field(0.75, ge=0, le=1)
    low_token_logprob: float = Field(-4.0, le=0, description="A token below this is a low-probability token.")
    max_low_span: int = Field(4, ge=1, description="This many low-probability tokens in a row: low confidence.")
    min_tokens: int = Field(3, ge=1, description="Shorter answers are not judged.")
    top_logprobs: int = Field(5, ge=0, le=20, description="Alternatives asked for, for the entropy estimate.")


ScannerConfig = Annotated[
    PiiScannerConfig
    | InjectionScannerConfig
    | SecretsScannerConfig
    | BannedTermsScannerConfig
    | InputSizeScannerConfig
    | ToxicityScannerConfig
    | SystemPromptLeakScannerConfig
    | JsonScannerConfig
    | ConfidenceScannerConfig,
    Field(discriminator="scanner"),
]
INPUT_SCANNERS = {"pii", "prompt_injection", "secrets", "banned_terms", "input_size"}
OUTPUT_SCANNERS = {"pii", "secrets", "banned_terms", "toxicity", "system_prompt_leak", "json", "confidence"}


def _default_input() -> list[ScannerConfig]:
    return [
        InputSizeScannerConfig(scanner="input_size"),
        InjectionScannerConfig(scanner="prompt_injection"),
        SecretsScannerConfig(scanner="secrets"),
        PiiScannerConfig(scanner="pii", action="redact", reversible=True),
    ]


def _default_output() -> list[ScannerConfig]:
    return [
        PiiScannerConfig(scanner="pii", action="redact"),
        SystemPromptLeakScannerConfig(scanner="system_prompt_leak"),
        JsonScannerConfig(scanner="json"),
    ]


class GuardPolicy(_Strict):
    """Scanners for the requests of some aliases and/or tenants."""

    name: str = Field(min_length=1)
    models: list[str] = Field(default_factory=list, description="Aliases this policy covers; empty: all.")
    tenants: list[str] = Field(default_factory=list, description="Tenants this policy covers; empty: all.")
    input: list[ScannerConfig] = Field(default_factory=_default_input)
    output: list[ScannerConfig] = Field(default_factory=_default_output)
    time_budget_ms: float = Field(
        1000,
        gt=0,
        description="Input scanning past this times out; so do an answer's output scans, all together "
        "(large texts are scanned off the event loop).",
    )
    on_timeout: Literal["block", "warn"] = Field(
        "block",
        description="Past the time budget: block the request (or withhold the answer), or pass it unscanned "
        "with a warning.",
    )

    @model_validator(mode="after")
    def _directions(self) -> GuardPolicy:
        for where, scanners, allowed in (
            ("input", self.input, INPUT_SCANNERS),
            ("output", self.output, OUTPUT_SCANNERS),
        ):
            seen: set[str] = set()
            for index, scanner in enumerate(scanners):
                if scanner.scanner not in allowed:
                    raise ValueError(f"{where}[{index}]: '{scanner.scanner}' is not an {where} scanner")
                if scanner.scanner in seen:
                    raise ValueError(f"{where}[{index}]: '{scanner.scanner}' is listed twice")
                seen.add(scanner.scanner)
                if where == "output" and isinstance(scanner, PiiScannerConfig) and scanner.reversible:
                    raise ValueError(f"output[{index}]: reversible applies to the input pii scanner")
        return self


class GuardConfig(_Strict):
    """The guard stage: off by default; on with no policies, the built-in default policy applies to all."""

    enabled: bool = False
    policies: list[GuardPolicy] = Field(default_factory=list)
    stream_window_chars: int = Field(
        160, ge=1, description="A stream is scanned (and released) in windows of this many characters."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> GuardConfig:
        names = [p.name for p in self.policies]
        if len(names) != len(set(names)):
            raise ValueError("policy names must be unique")
        return self

    def effective_policies(self) -> list[GuardPolicy]:
        """The configured policies, or the default one when none is configured."""
        return list(self.policies) or [GuardPolicy(name="default")]
