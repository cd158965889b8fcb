"""Shifted windows raise the alarm, with the feature that moved named in a sentence; unshifted ones do not.

Constructed traffic (tests/drift/traffic.py) through the real feature extraction, summaries and the
real embedded MiniLM.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from opsgate.drift.engine import Span, headline, run_check
from opsgate.drift.summary import WindowSummary
from tests.drift.conftest import CachedEncoder, config, observations, summarise
from tests.drift.traffic import mixed

N = 600
REF, CUR = Span(0, 3600), Span(3600, 7200)


def window(encoder: CachedEncoder | None, seed: int, n: int = N, **shares: Any) -> WindowSummary:
    return summarise(observations(mixed(random.Random(seed), n, **shares)), encoder, capacity=64, seed=seed)


def check(reference: WindowSummary, current: WindowSummary, **overrides: Any) -> dict[str, Any]:
    return run_check(config(**overrides), "chat-model", None, reference, current, REF, CUR)


def drifted(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["feature"]: t for t in result["tests"] if t["drifted"]}


def test_unshifted_windows_do_not_alarm(encoder: CachedEncoder) -> None:
    result = check(window(encoder, 1), window(encoder, 2))
    assert result["insufficient"] is None
    assert not result["drifted"], headline(result)
    assert result["score"] == 0.0
    features = {t["feature"] for t in result["tests"]}
    assert {"prompt_length", "prompt_language", "prompt_embedding", "answer_embedding", "answer_length"} <= features
    assert all(0.0 <= t["p_adjusted"] <= 1.0 and t["p_adjusted"] >= t["p_value"] for t in result["tests"])


def test_language_shift_is_named(encoder: CachedEncoder) -> None:
    result = check(window(encoder, 3, de=0.02), window(encoder, 4, de=0.31))
    moved = drifted(result)
    assert result["drifted"] and "prompt_language" in moved
    summary = moved["prompt_language"]["summary"]
    assert summary.startswith("share of 'de' prompts") and "→ 3" in summary, summary
    assert moved["prompt_language"]["effect"] >= 0.2
    assert moved["prompt_language"]["current_distribution"]["de"] > 0.25
    assert result["tests"][0]["drifted"]


def test_topic_shift_is_caught_by_embeddings_alone(encoder: CachedEncoder) -> None:
    # Same language, same length distribution (templates of similar size): only the topic moves.
    result = check(window(encoder, 5), window(encoder, 6, code=0.5))
    moved = drifted(result)
    assert "prompt_embedding" in moved, headline(result)
    assert "prompt_language" not in moved
    assert moved["prompt_embedding"]["test"] == "mmd_permutation"
    assert "moved in embedding space" in moved["prompt_embedding"]["summary"]


def test_answer_length_shift_says_minus_forty_percent(encoder: CachedEncoder) -> None:
    result = check(window(encoder, 7, words=60), window(encoder, 8, words=36))
    moved = drifted(result)
    assert "answer_length" in moved, headline(result)
    summary = moved["answer_length"]["summary"]
    assert summary.startswith("mean answer length \u2212"), summary
    assert 0.3 <= moved["answer_length"]["effect"] <= 0.5
    assert moved["answer_length"]["current_stats"]["mean"] < moved["answer_length"]["reference_stats"]["mean"]
    assert "prompt_language" not in moved


def test_attack_share_shift(encoder: CachedEncoder) -> None:
    result = check(window(encoder, 9, attack=0.01), window(encoder, 10, attack=0.15))
    moved = drifted(result)
    assert "input_guard:prompt_injection" in moved, headline(result)
    assert moved["input_guard:prompt_injection"]["summary"].startswith("share of prompts tripping prompt_injection")
    assert moved["input_guard:prompt_injection"]["test"] == "two_proportion_z"


def test_refusal_and_toxicity_shift() -> None:
    result = check(window(None, 11), window(None, 12, refusal=0.2, toxic=0.12))
    moved = drifted(result)
    assert "refusal_rate" in moved and "output_guard:toxicity" in moved, headline(result)
    assert moved["output_guard:toxicity"]["summary"].startswith("share of answers flagged toxic")


def test_minimum_effect_holds_back_significant_trivia() -> None:
    # 4% vs 7% German over 20k requests is very significant, but under a TV distance of 0.1.
    reference, current = window(None, 13, n=20_000, de=0.04), window(None, 14, n=20_000, de=0.07)
    result = check(reference, current)
    language = next(t for t in result["tests"] if t["feature"] == "prompt_language")
    assert language["p_adjusted"] < 1e-6
    assert not language["drifted"]
    strict = check(reference, current, min_effect={"total_variation": 0.02})
    assert drifted(strict).get("prompt_language")


def test_small_windows_are_insufficient() -> None:
    result = check(window(None, 15, n=50), window(None, 16, n=600))
    assert not result["drifted"]
    assert result["insufficient"] == "reference window has 50 requests (needs 100)"
    assert result["tests"] == []
    assert headline(result).startswith("insufficient data")


@pytest.mark.parametrize("embeddings", [True, False])
def test_result_has_the_spec_shape(encoder: CachedEncoder, embeddings: bool) -> None:
    embed = encoder if embeddings else None
    result = check(window(embed, 17), window(embed, 18, de=0.4), embeddings=embeddings)
    for key in ("alias", "tenant", "checked_at", "reference", "current", "alpha", "drifted", "score", "insufficient"):
        assert key in result
    assert result["reference"]["kind"] == "trailing" and result["reference"]["requests"] == N
    assert (result["current"]["embedded"] > 0) is embeddings
    assert any(t["kind"] == "embedding" for t in result["tests"]) is embeddings
    for test in result["tests"]:
        for key in ("feature", "label", "side", "kind", "test", "statistic", "p_value", "p_adjusted", "effect"):
            assert key in test
        assert test["side"] in ("input", "output")
    assert 0 < result["score"] <= 1
    assert [t["drifted"] for t in result["tests"]] == sorted((t["drifted"] for t in result["tests"]), reverse=True)
