"""Send a suite's cases through a gateway with the official ``openai`` SDK and classify each answer.

The detection contract (``pipeline/guard.py``): an input block is HTTP 400 with code
``input_blocked``, an output block HTTP 422 with code ``output_blocked``, and a warning is a 200
whose ``x-opsgate-guard-warn`` header names the scanners. A case is *detected* if it was blocked or
flagged. Separately, a case that plants a canary (or lists ``expect.not_in_output``) *succeeded* as
an attack if a planted string came back in the answer — what a user cares about, whoever stopped it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import openai

from opsgate.redteam.suite import Case, contains_marker, new_canary

Outcome = Literal["blocked_input", "blocked_output", "flagged", "passed", "error"]
WARN_HEADER = "x-opsgate-guard-warn"
BLOCK_CODES: dict[str, Outcome] = {"input_blocked": "blocked_input", "output_blocked": "blocked_output"}
_KNOWN_ERROR_FIELDS = frozenset({"message", "type", "param", "code"})


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How each case is sent: sampling is fixed (temperature 0) so runs are comparable."""

    model: str
    max_tokens: int = 128
    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 2
    extra_headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CaseResult:
    """What one case got back."""

    case: Case
    outcome: Outcome
    status: int | None = None
    scanners: list[str] = field(default_factory=list)
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    canary: str | None = None
    # True/False when the case plants strings to leak; None when it plants none or never got an answer.
    leaked: bool | None = None
    latency_ms: float = 0.0

    @property
    def detected(self) -> bool:
        """Blocked or flagged by a guard."""
        return self.outcome in ("blocked_input", "blocked_output", "flagged")

    def to_dict(self, output_chars: int = 400) -> dict[str, Any]:
        """JSON form (the output cut to ``output_chars``)."""
        return {
            "id": self.case.id,
            "category": self.case.category,
            "kind": self.case.kind,
            "outcome": self.outcome,
            "detected": self.detected if self.outcome != "error" else None,
            "leaked": self.leaked,
            "status": self.status,
            "scanners": self.scanners,
            "message": self.message,
            "details": self.details,
            "canary": self.canary,
            "output": self.output[:output_chars],
            "latency_ms": round(self.latency_ms, 1),
        }


def parse_warn_header(value: str | None) -> list[str]:
    """``"pii, injection"`` → ``["pii", "injection"]``; empty or missing → ``[]``."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _error_details(body: object) -> dict[str, Any]:
    # The SDK hands us the "error" object; anything beyond the standard four fields is the guard's detail.
    if isinstance(body, dict):
        return {k: v for k, v in body.items() if k not in _KNOWN_ERROR_FIELDS}
    return {}


def _leaked(case: Case, canary: str, output: str) -> bool | None:
    markers = case.leak_markers(canary)
    if not markers:
        return None
    return any(contains_marker(output, marker) for marker in markers)


async def run_case(client: openai.AsyncOpenAI, case: Case, settings: RunSettings) -> CaseResult:
    """Send one case and classify the answer; never raises for an HTTP or network failure."""
    canary = new_canary()
    markers_planted = bool(case.leak_markers(canary))
    started = time.perf_counter()
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=settings.model,
            messages=case.render(canary),  # type: ignore[arg-type]
            max_tokens=settings.max_tokens,
            temperature=0,
            # A cached answer would skip nothing in the guards, but a fresh one is what is measured.
            extra_headers={"Cache-Control": "no-cache", **settings.extra_headers},
        )
        completion = raw.parse()
    except openai.APIStatusError as error:
        latency = (time.perf_counter() - started) * 1000.0
        code = error.code if isinstance(error.code, str) else None
        outcome = BLOCK_CODES.get(code or "")
        body = error.body if isinstance(error.body, dict) else {}
        message = str(body.get("message") or error.message)
        scanners = parse_warn_header(error.response.headers.get(WARN_HEADER))
        if isinstance(body.get("scanner"), str) and body["scanner"] not in scanners:
            scanners.insert(0, body["scanner"])  # the guard names the scanner that blocked
        if outcome is None:
            return CaseResult(
                case, "error", error.status_code, scanners, message, _error_details(body), latency_ms=latency
            )
        return CaseResult(
            case,
            outcome,
            error.status_code,
            scanners,
            message,
            _error_details(body),
            canary=canary if case.has_canary() else None,
            leaked=False if markers_planted else None,
            latency_ms=latency,
        )
    except openai.APIError as error:  # connection refused, timeout, a malformed answer
        latency = (time.perf_counter() - started) * 1000.0
        return CaseResult(case, "error", None, message=f"{type(error).__name__}: {error}", latency_ms=latency)
    latency = (time.perf_counter() - started) * 1000.0
    output = "".join(choice.message.content or "" for choice in completion.choices)
    scanners = parse_warn_header(raw.headers.get(WARN_HEADER))
    return CaseResult(
        case,
        "flagged" if scanners else "passed",
        raw.http_response.status_code,
        scanners,
        output=output,
        canary=canary if case.has_canary() else None,
        leaked=_leaked(case, canary, output),
        latency_ms=latency,
    )


async def run_suite(
    client: openai.AsyncOpenAI,
    cases: Sequence[Case],
    settings: RunSettings,
    on_result: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Run ``cases`` with at most ``settings.concurrency`` in flight; results in suite order."""
    gate = asyncio.Semaphore(max(1, settings.concurrency))

    async def one(case: Case) -> CaseResult:
        async with gate:
            result = await run_case(client, case, settings)
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(one(case) for case in cases)))


def make_client(base_url: str, api_key: str | None, settings: RunSettings) -> openai.AsyncOpenAI:
    """The SDK client for a gateway's ``/v1`` base URL (a placeholder key when auth is off)."""
    return openai.AsyncOpenAI(
        base_url=base_url.rstrip("/"),
        api_key=api_key or "opsgate-redteam",
        timeout=settings.timeout,
        max_retries=settings.max_retries,
    )
