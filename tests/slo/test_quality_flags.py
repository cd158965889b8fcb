"""The per-record quality flags: which guard verdicts and answers set which bit, odd tags never raise."""

from __future__ import annotations

from typing import Any

import pytest

from opsgate.evals.scorers_free import REFUSAL_PHRASES, REFUSAL_WINDOW, looks_like_refusal
from opsgate.slo.quality import (
    ANSWERED,
    INJECTION,
    LOW_CONFIDENCE,
    PII_LEAK,
    REFUSAL,
    SCANNED,
    TOXIC,
    is_refusal,
    quality_flags,
)


def verdicts(**scanners: str) -> list[dict[str, Any]]:
    return [{"scanner": name, "verdict": verdict, "score": 0.9, "action": "log"} for name, verdict in scanners.items()]


def test_each_verdict_sets_its_bit() -> None:
    guard = {
        "input": verdicts(input_size="pass", prompt_injection="fail", pii="fail"),
        "output": verdicts(pii="fail", toxicity="fail", confidence="fail", secrets="fail"),
    }
    flags = quality_flags(guard, "chat", 200, "fine", None, "stop")
    assert flags == SCANNED | INJECTION | ANSWERED | PII_LEAK | TOXIC | LOW_CONFIDENCE  # input PII is not a leak
    clean = {"input": verdicts(prompt_injection="pass"), "output": verdicts(pii="pass", toxicity="pass")}
    assert quality_flags(clean, "chat", 200, "fine") == SCANNED | ANSWERED


def test_blocks_and_errors() -> None:
    blocked_input = {"input": verdicts(prompt_injection="fail")}
    assert quality_flags(blocked_input, "chat", 400, None) == SCANNED | INJECTION  # never answered
    blocked_output = {"input": verdicts(prompt_injection="pass"), "output": verdicts(toxicity="fail")}
    assert quality_flags(blocked_output, "chat", 422, None) == SCANNED | ANSWERED | TOXIC  # the model did answer
    assert quality_flags(None, "chat", 502, None) == 0  # an upstream failure is no answer
    assert quality_flags(None, "chat", 200, "I'm sorry, I can't") == ANSWERED | REFUSAL  # guard off: refusals only
    assert quality_flags(None, "embedding", 200, None) == 0
    assert quality_flags(None, "completion", 200, "As an AI language model, no.") == ANSWERED | REFUSAL


@pytest.mark.parametrize(
    "guard",
    [
        "junk",
        {"input": "x", "output": 5},
        {"input": [None, 3, {"scanner": None, "verdict": "fail"}], "output": [{"scanner": ["pii"], "verdict": "fail"}]},
        {"input": [{"scanner": "prompt_injection", "verdict": None}], "output": None},
    ],
)
def test_odd_guard_tags_never_raise(guard: Any) -> None:
    assert quality_flags(guard, "chat", 200, "\x00\ud800 text") & ~(SCANNED | ANSWERED) == 0


def test_refusal_field_and_content_filter_count() -> None:
    assert is_refusal(None, "I can't produce that schema.")
    assert is_refusal("", None, "content_filter")
    assert not is_refusal("", "  ", "stop")
    assert not is_refusal("Here is the file. " * 30 + "I'm sorry for the length.")  # past the first 300 characters


CORPUS = [
    "I'm sorry, but I can't help with that.",
    "i am unable to do this",
    "I am not able to share it",
    "I cannot help with that",
    "I can't assist you",
    "Sadly I cannot provide that",
    "I can't comply.",
    "I must decline.",
    "I have to refuse this one",
    "I won't help with malware",
    "I won't do it",
    "As an AI, I have no opinions",
    "As an AI language model I cannot",
    "I'm not allowed to discuss this",
    "It is not appropriate for me to say",
    "I cannot fulfill this request",
    "I cannot fulfil this",
    "Sure! Here is the answer you asked for.",
    "Aim for an idempotent API; I'd suggest retries with jitter.",
    "IMPORTANT: it is allowed. I am happy to help.",
    "Wi-Fi: I'm sorry-free text without a match? i'msorry",
    "",
]


@pytest.mark.parametrize("text", CORPUS)
def test_fast_refusal_detector_agrees_with_the_plain_phrases(text: str) -> None:
    # The fast (lookahead) detector must match exactly where the plain phrase list does, inside the
    # window and past it (a phrase after the window is not a refusal).
    for padded in (text, " " * (REFUSAL_WINDOW - 5) + text):
        assert looks_like_refusal(padded) == (REFUSAL_PHRASES.search(padded[:REFUSAL_WINDOW]) is not None)
    assert looks_like_refusal(text) == (REFUSAL_PHRASES.search(text) is not None)  # the corpus fits the window
