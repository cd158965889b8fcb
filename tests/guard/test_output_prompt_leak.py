"""system_prompt_leak over a stream: each call gets all text released so far; the work must stay
linear in the answer (probe 2026-12-06 finding 2: 30 KB prompt + 32 KB answer took 66 s), and a
leak split across windows must still be found."""

from __future__ import annotations

import random
import time

import pytest

from opsgate.domain.guard_config import SystemPromptLeakScannerConfig
from opsgate.guard import prompt_leak
from opsgate.guard.base import BoundedLru, ScanContext, ScanResult
from opsgate.guard.output import SystemPromptLeakScanner

LONG_PROMPT = " ".join(f"Rule number {i} says always be polite to user {i}." for i in range(600))  # ~30 KB
SHORT_PROMPT = (
    "You are Zed, the billing bot of ACME. Never discuss the internal price list. Refunds need manager approval. "
    "Escalate any legal threat to the duty officer at once."
)
FILLER = "Here is a detailed explanation of the topic at hand, with examples and caveats. "


def scanner() -> SystemPromptLeakScanner:
    return SystemPromptLeakScanner(SystemPromptLeakScannerConfig(scanner="system_prompt_leak"))


def stream(prompt: str, answer: str, window: int = 160) -> list[ScanResult]:
    """As the guard stage calls a ``whole``-scope scanner: all text so far, every window, final last."""
    leak = scanner()
    results = []
    for end in range(window, len(answer) + window, window):
        context = ScanContext("output", system_prompt=prompt, final=end >= len(answer))
        results.append(leak.scan(answer[:end], context))
    return results


def test_a_long_prompt_and_a_long_stream_cost_linear_time() -> None:
    assert len(LONG_PROMPT) > 29_000
    answer = (FILLER * 900)[:64_000]
    started = time.thread_time()
    results = stream(LONG_PROMPT, answer)
    assert time.thread_time() - started < 1.0  # quadratic before: ~2 minutes of CPU
    assert len(results) == 400 and all(r.verdict == "pass" for r in results)
    # The same stream with a third of the prompt repeated in its middle: found, and still cheap.
    leaked = answer[:30_000] + " " + LONG_PROMPT[:12_000] + " " + answer[30_000:]
    started = time.thread_time()
    results = stream(LONG_PROMPT, leaked[:64_000])
    assert time.thread_time() - started < 1.0
    assert results[-1].score == pytest.approx(0.4, abs=0.03)


def test_a_short_prompt_over_a_long_stream_costs_linear_time() -> None:
    prompt = " ".join(
        f"Policy {i}: always answer customers of region {i} politely and in their language." for i in range(25)
    )
    answer = (FILLER * 900)[:64_000]
    started = time.thread_time()
    results = stream(prompt, answer)
    assert time.thread_time() - started < 1.0  # 11 s of CPU before (probe p5b)
    assert prompt_leak.index_for(prompt).fuzzy and results[-1].verdict == "pass"


@pytest.mark.parametrize("prompt", [SHORT_PROMPT, LONG_PROMPT], ids=["fuzzy", "shingles"])
@pytest.mark.parametrize("window", [7, 160, 333])
def test_a_leak_split_across_windows_is_found(prompt: str, window: int) -> None:
    sentences = [s for s in prompt_leak.SENTENCE.split(prompt) if s.strip()]
    leak = " ".join(sentences[: max(len(sentences) * 2 // 3, 3)])
    answer = FILLER * 3 + "Sure! My instructions: " + leak + " " + FILLER * 8
    whole = scanner().scan(answer, ScanContext("output", system_prompt=prompt))
    results = stream(prompt, answer, window)
    assert whole.verdict == "fail" and results[-1].verdict == "fail"
    assert results[-1].score == whole.score
    # Blocked before the answer ends (windows after the leak are not final).
    assert any(r.verdict == "fail" for r in results[:-1])


@pytest.mark.parametrize("prompt", [SHORT_PROMPT, LONG_PROMPT], ids=["fuzzy", "shingles"])
def test_resuming_gives_what_a_full_read_gives(prompt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(5)
    sentences = [s for s in prompt_leak.SENTENCE.split(prompt) if s.strip()]
    parts = [rnd.choice(sentences) if rnd.random() < 0.3 else FILLER for _ in range(40)]
    answer = "  ".join(parts)
    ends = [*sorted(rnd.sample(range(1, len(answer)), 60)), len(answer)]
    resumed = []
    for end in ends:
        context = ScanContext("output", system_prompt=prompt, final=end == len(answer))
        resumed.append(scanner().scan(answer[:end], context).score)
    monkeypatch.setattr(prompt_leak, "_states", BoundedLru(0))  # nothing kept: every call reads all
    fresh = [
        scanner().scan(answer[:end], ScanContext("output", system_prompt=prompt, final=end == len(answer))).score
        for end in ends
    ]
    assert resumed == fresh
    assert resumed[-1] > 0


def test_a_different_answer_with_the_same_prompt_does_not_resume_from_another() -> None:
    answer = FILLER * 4 + SHORT_PROMPT
    assert stream(SHORT_PROMPT, answer)[-1].verdict == "fail"
    other = FILLER * 4 + "Nothing to see here, just an ordinary answer about invoices. " * 3
    assert all(r.verdict == "pass" for r in stream(SHORT_PROMPT, other))


def test_long_sentences_are_compared_in_pieces() -> None:
    # One 4 KB sentence (no sentence ends): partial_ratio on 4 KB costs ~0.5 s a call; in pieces it is cheap.
    rnd = random.Random(1)
    words = ["alpha", "beta", "customer", "refund", "policy", "invoice", "region", "manager", "approve"]
    prompt = " ".join(rnd.choices(words, k=700))[:4090]
    index = prompt_leak.index_for(prompt)
    assert index.fuzzy and max(len(p) for p in index.pieces) <= prompt_leak.MAX_PIECE + prompt_leak.MIN_PIECE
    answer = (FILLER * 900)[:64_000]
    started = time.thread_time()
    results = stream(prompt, answer[:20_000] + " " + prompt + " " + answer[20_000:40_000])
    assert time.thread_time() - started < 2.0
    assert results[-1].verdict == "fail" and results[-1].score == 1.0


@pytest.mark.parametrize("prompt", [SHORT_PROMPT, LONG_PROMPT], ids=["fuzzy", "shingles"])
def test_interleaved_streams_sharing_a_beginning_keep_their_own_findings(prompt: str) -> None:
    common = FILLER * 12  # ~1 KB both answers start with: its kept states are shared
    leaking = common + "My instructions: " + prompt + " " + FILLER * 4
    clean = common + "Nothing from the instructions here, only invoices and dates. " * 40
    leak, other = scanner(), scanner()
    results: dict[str, list[ScanResult]] = {"leaking": [], "clean": []}
    for end in range(160, max(len(leaking), len(clean)) + 160, 160):
        for name, answer, instance in (("leaking", leaking, leak), ("clean", clean, other)):
            if end - 160 < len(answer):
                context = ScanContext("output", system_prompt=prompt, final=end >= len(answer))
                results[name].append(instance.scan(answer[:end], context))
    assert results["leaking"][-1].verdict == "fail"
    assert all(r.verdict == "pass" for r in results["clean"])
