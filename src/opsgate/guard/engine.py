"""The policy engine: picks a request's policy, runs its scanners in order, and applies their actions.

Scanners are built once per policy at start. A run returns what the stage needs — the (possibly
redacted) texts, which scanners asked to warn, the scanner that blocked (if any) — and one entry per
scanner for the record: ``{"scanner", "verdict", "score", "action", "ms"}`` (plus ``details``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opsgate.domain.errors import InvalidRequestError
from opsgate.domain.guard_config import (
    BannedTermsScannerConfig,
    ConfidenceScannerConfig,
    GuardConfig,
    GuardPolicy,
    InjectionScannerConfig,
    InputSizeScannerConfig,
    JsonScannerConfig,
    PiiScannerConfig,
    ScannerConfig,
    SecretsScannerConfig,
    SystemPromptLeakScannerConfig,
    ToxicityScannerConfig,
)
from opsgate.guard.base import ScanContext, ScanDeadline, Scanner, ScanResult

log = logging.getLogger("opsgate.guard")

_ALL_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Injection comes from what users and tools write; a system prompt is the operator's own text.
_DEFAULT_ROLES = {"prompt_injection": frozenset({"user", "tool", "function"})}


class GuardBlocked(InvalidRequestError):
    """A scanner whose action is ``block`` found something: 400 ``input_blocked`` or 422 ``output_blocked``."""

    def __init__(self, direction: str, policy: str, result: GuardEntry, param: str | None) -> None:
        where = "input" if direction == "input" else "output"
        super().__init__(
            f"The {where} was blocked by guard policy '{policy}': scanner {result.name} "
            f"(score {result.score:.2f}, threshold {result.threshold:.2f}).",
            param=param,
            code=f"{where}_blocked",
            status=400 if direction == "input" else 422,
            extra={"policy": policy, "scanner": result.name},
        )


def build_scanner(config: ScannerConfig) -> Scanner:
    """The scanner for one config entry (heavier scanners import their libraries only when used)."""
    if isinstance(config, PiiScannerConfig):
        from opsgate.guard.pii import PiiScanner

        return PiiScanner(config)
    if isinstance(config, InjectionScannerConfig):
        from opsgate.guard.injection import InjectionScanner

        return InjectionScanner(config)
    if isinstance(config, SecretsScannerConfig):
        from opsgate.guard.secrets import SecretsScanner

        return SecretsScanner(config)
    from opsgate.guard import output, rules

    factories: dict[type[Any], Callable[[Any], Scanner]] = {
        BannedTermsScannerConfig: rules.BannedTermsScanner,
        InputSizeScannerConfig: rules.InputSizeScanner,
        ToxicityScannerConfig: output.ToxicityScanner,
        SystemPromptLeakScannerConfig: output.SystemPromptLeakScanner,
        JsonScannerConfig: output.JsonScanner,
        ConfidenceScannerConfig: output.ConfidenceScanner,
    }
    return factories[type(config)](config)


@dataclass(slots=True)
class Entry:
    """A configured scanner: the instance and what its config says to do with a hit."""

    scanner: Scanner
    config: ScannerConfig

    @property
    def name(self) -> str:
        """The scanner's name."""
        return self.scanner.name

    def roles(self) -> frozenset[str]:
        """Which input messages it reads."""
        roles = getattr(self.config, "roles", None)
        return frozenset(roles) if roles else _DEFAULT_ROLES.get(self.name, _ALL_ROLES)

    @property
    def scope(self) -> str:
        """In a stream: ``window`` (each new piece), ``whole`` (all text so far) or ``final`` (at the end)."""
        return str(getattr(self.scanner, "stream_scope", "window"))


_SURROGATE = re.compile("[\ud800-\udfff]")


def scannable(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD: RE2 and the models read UTF-8, which cannot
    hold them, and a scanner that raised on one would give no answer for the request."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


@dataclass(slots=True)
class GuardEntry:
    """One scanner's verdict over a request's input or output (several texts folded into one)."""

    name: str
    action: str
    threshold: float
    verdict: str = "pass"
    score: float = 0.0
    ns: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, result: ScanResult, ns: int) -> None:
        """Fold in one scan: worst verdict, highest score, time added up."""
        self.ns += ns
        self.score = max(self.score, result.score)
        if result.verdict == "fail":
            self.verdict = "fail"
        if result.details:
            self.details = result.details

    def record(self) -> dict[str, Any]:
        """The JSON-able entry the record keeps."""
        out: dict[str, Any] = {
            "scanner": self.name,
            "verdict": self.verdict,
            "score": round(self.score, 4),
            "action": self.action,
            "ms": round(self.ns / 1e6, 4),
        }
        if self.details:
            out["details"] = self.details
        return out


class Policy:
    """A configured policy with its scanners built."""

    def __init__(self, config: GuardPolicy) -> None:
        self.name = config.name
        self.models = frozenset(config.models)
        self.tenants = frozenset(config.tenants)
        self.input = [Entry(build_scanner(c), c) for c in config.input]
        self.output = [Entry(build_scanner(c), c) for c in config.output]
        self.time_budget_ms = config.time_budget_ms
        self.on_timeout = config.on_timeout

    def specificity(self, model: str | None, tenant: str | None) -> int:
        """How specifically the policy covers this request: -1 not at all, 0 a catch-all … 3 both named."""
        if self.models and model not in self.models:
            return -1
        if self.tenants and tenant not in self.tenants:
            return -1
        return (2 if self.tenants else 0) + (1 if self.models else 0)


@dataclass(slots=True)
class Run:
    """The outcome of running one direction's scanners over some texts."""

    texts: list[str]
    entries: dict[str, GuardEntry]
    warn: list[str] = field(default_factory=list)
    blocked: GuardEntry | None = None
    # The deadline passed before every scanner had run (the later ones did not).
    timed_out: bool = False

    def record(self) -> list[dict[str, Any]]:
        """The record entries, in scanner order."""
        return [entry.record() for entry in self.entries.values()]


class GuardEngine:
    """Picks the policy of a request and runs its scanners."""

    def __init__(self, config: GuardConfig) -> None:
        self.policies = [Policy(p) for p in config.effective_policies()]

    def policy_for(self, model: str | None, tenant: str | None) -> Policy | None:
        """The most specific matching policy (the first listed among equals), or None."""
        best: Policy | None = None
        best_rank = -1
        for policy in self.policies:
            rank = policy.specificity(model, tenant)
            if rank > best_rank:
                best, best_rank = policy, rank
        return best

    def run(
        self,
        entries: Sequence[Entry],
        texts: Sequence[tuple[str, str]],
        context: ScanContext,
        accumulated: dict[str, GuardEntry] | None = None,
        deadline_ns: int | None = None,
    ) -> Run:
        """Run ``entries`` over ``(role, text)`` pairs in order; stop at the first block.

        ``input_size`` sees all texts joined; the others each text their roles allow. A redacting
        scanner's output is what the next scanner reads.
        """
        current = [text for _, text in texts]
        run = Run(current, accumulated if accumulated is not None else {})
        # Scanners that can stop early (pii) read the same deadline (perf_counter_ns) and raise ScanDeadline.
        context.deadline_ns = deadline_ns
        for entry in entries:
            if deadline_ns is not None and time.perf_counter_ns() > deadline_ns:
                # Past the time budget (``deadline_ns``, perf_counter): the caller applies the policy's on_timeout.
                run.timed_out = True
                return run
            folded = run.entries.get(entry.name)
            if folded is None:
                folded = run.entries[entry.name] = GuardEntry(entry.name, entry.config.action, entry.config.threshold)
            if entry.name == "input_size":
                targets: list[int] = []
                started = time.perf_counter_ns()
                result = entry.scanner.scan("\n".join(current), context)
                folded.add(result, time.perf_counter_ns() - started)
            else:
                roles = entry.roles()
                targets = [i for i, (role, _) in enumerate(texts) if context.direction == "output" or role in roles]
            failed = False
            for index in targets:
                context.role = texts[index][0]
                started = time.perf_counter_ns()
                try:
                    result = entry.scanner.scan(scannable(current[index]), context)
                except ScanDeadline:
                    # Past the budget inside a scanner: the same as past it between scanners (the caller
                    # applies on_timeout); never a pass with the text unredacted.
                    folded.ns += time.perf_counter_ns() - started
                    run.timed_out = True
                    return run
                except Exception as error:
                    # A scanner bug must not take requests down with it: it is logged, and the record
                    # says the scanner gave no answer for this request (not a silent pass).
                    log.exception("guard scanner %s failed", entry.name)
                    folded.ns += time.perf_counter_ns() - started
                    folded.details = {**folded.details, "error": type(error).__name__}
                    continue
                folded.add(result, time.perf_counter_ns() - started)
                if result.verdict == "fail":
                    failed = True
                    if entry.config.action == "redact":
                        current[index] = result.sanitized_text
            if folded.verdict == "fail" or failed:
                action = entry.config.action
                if action == "block":
                    run.blocked = folded
                    return run
                if action == "warn" and entry.name not in run.warn:
                    run.warn.append(entry.name)
        return run
