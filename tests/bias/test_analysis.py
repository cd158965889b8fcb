"""The statistics: a planted gap fails the audit with its dimension named, no gap passes, errors are budgeted."""

from __future__ import annotations

import gc
import json
import math
from typing import Any

import numpy as np
import pytest

from opsgate.bias.analysis import Thresholds, analyse
from opsgate.bias.metrics import AnswerMetrics
from opsgate.bias.runner import Answer

GROUPS = {"gender": ["woman", "man"]}


def answer(
    group: str,
    index: int,
    *,
    refused: bool = False,
    sentiment: float = 0.5,
    toxicity: float = 0.01,
    words: int = 40,
    outcome: str = "answered",
    dimension: str = "gender",
) -> Answer:
    metrics = None
    if outcome == "answered":
        metrics = AnswerMetrics(refused, sentiment, toxicity, words)
    elif outcome == "blocked":
        metrics = AnswerMetrics(True, None, None, None)
    return Answer(
        f"{dimension}/t{index}/0", dimension, f"t{index}", 0, group, f"prompt {index}", outcome, metrics=metrics
    )


def comparison(result: Any, metric: str) -> Any:
    return next(c for c in result.comparisons if c.metric == metric)


def test_a_planted_refusal_gap_fails_the_audit_and_names_the_dimension() -> None:
    answers = [answer("woman", i, refused=True) for i in range(30)] + [answer("man", i) for i in range(30)]
    result = analyse(answers, GROUPS, Thresholds())
    assert not result.passed
    assert result.failed_dimensions() == ["gender"]
    refusal = comparison(result, "refusal")
    assert refusal.verdict == "fail" and refusal.gap == 1.0 and refusal.n_pairs == 30
    assert refusal.ci_low is not None and refusal.ci_low > 0.10
    assert refusal.p_value is not None and refusal.p_value < 1e-6  # exact McNemar: 30 discordant pairs, one way
    assert any("refusal gap woman vs man" in failure for failure in result.failures)


def test_no_gap_passes_and_every_metric_with_spread_free_equal_answers_passes() -> None:
    answers = [answer(g, i) for i in range(30) for g in ("woman", "man")]
    result = analyse(answers, GROUPS, Thresholds())
    assert result.passed and result.failures == []
    for metric in ("sentiment", "toxicity", "length"):
        assert comparison(result, metric).verdict == "pass"
    # 0 of 30 refused on both sides: the interval still has width, honest about 30 pairs.
    refusal = comparison(result, "refusal")
    assert refusal.gap == 0 and refusal.ci_low is not None and refusal.ci_low < 0 < refusal.ci_high


def test_noisy_gaps_inside_and_beyond_the_threshold() -> None:
    rng = np.random.default_rng(3)
    base = rng.uniform(-0.5, 0.5, 300)  # per-template level, shared by both groups of a pair

    def run(shift: float) -> Any:
        answers = []
        for i, level in enumerate(base):
            answers.append(answer("woman", i, sentiment=float(level + shift + rng.normal(0, 0.05))))
            answers.append(answer("man", i, sentiment=float(level + rng.normal(0, 0.05))))
        return comparison(analyse(answers, GROUPS, Thresholds()), "sentiment")

    small, large = run(0.02), run(0.4)
    assert small.verdict == "pass" and abs(small.gap - 0.02) < 0.02
    assert large.verdict == "fail" and large.ci_low > 0.1
    assert large.p_adjusted is not None and large.p_adjusted >= large.p_value and large.significant


def test_length_is_compared_as_a_ratio() -> None:
    answers = [answer("woman", i, words=100 + i) for i in range(20)]
    answers += [answer("man", i, words=50 + i // 2) for i in range(20)]
    length = comparison(analyse(answers, GROUPS, Thresholds()), "length")
    assert length.verdict == "fail"
    assert math.expm1(length.gap) == pytest.approx(1.0, abs=0.1)  # about twice as long
    assert "+" in length.describe_gap() and "%" in length.describe_gap()


def test_guard_blocks_are_refusals_without_text() -> None:
    answers = [answer("woman", i, outcome="blocked") for i in range(20)] + [answer("man", i) for i in range(20)]
    result = analyse(answers, GROUPS, Thresholds())
    assert result.blocked == 20 and result.errors == 0
    assert comparison(result, "refusal").verdict == "fail"
    sentiment = comparison(result, "sentiment")
    assert sentiment.n_pairs == 0 and sentiment.verdict == "inconclusive"


def test_errors_are_counted_excluded_and_fail_the_audit_past_the_budget() -> None:
    answers = [answer(g, i) for i in range(20) for g in ("woman", "man")]
    for i in range(3):
        answers[2 * i] = answer("woman", i, outcome="error")
    answers[0].error, answers[0].status = "upstream broke", 502
    result = analyse(answers, GROUPS, Thresholds(max_error_rate=0.05))
    assert result.errors == 3 and result.errors_by_group == {"gender": {"woman": 3, "man": 0}}
    assert comparison(result, "sentiment").n_pairs == 17
    assert not result.passed and "3 of 40 requests errored" in result.failures[0]
    assert result.error_samples[0] == "HTTP 502: upstream broke"
    assert analyse(answers, GROUPS, Thresholds(max_error_rate=0.1)).passed


def test_strict_fails_on_inconclusive_comparisons() -> None:
    answers = [answer(g, i) for i in range(5) for g in ("woman", "man")]
    assert analyse(answers, GROUPS, Thresholds()).passed
    strict = analyse(answers, GROUPS, Thresholds(strict=True))
    assert not strict.passed and any("inconclusive" in f and "refusal" in f for f in strict.failures)


def test_simultaneous_level_counts_every_comparison_and_json_has_no_nan() -> None:
    groups = {"gender": ["woman", "man", "nonbinary"], "age": ["young", "old"]}
    answers = [answer(g, i) for i in range(3) for g in groups["gender"]]
    answers.append(answer("young", 0, dimension="age"))  # one lonely answer: no pair at all
    result = analyse(answers, groups, Thresholds(alpha=0.05))
    assert len(result.comparisons) == (3 + 1) * 4
    assert result.confidence_level == pytest.approx(1 - 0.05 / 16)
    document = result.to_dict()
    text = json.dumps(document, allow_nan=False)  # raises on NaN/Infinity
    assert json.loads(text)["verdicts"]["inconclusive"] >= 4
    age = [c for c in result.comparisons if c.dimension == "age"]
    assert all(c.n_pairs == 0 and c.verdict == "inconclusive" and c.gap is None for c in age)


def test_nothing_sent_is_a_failure() -> None:
    result = analyse([], GROUPS, Thresholds())
    assert not result.passed and "no request was sent" in result.failures[0]


def _simulated(rng: np.random.Generator, pairs: int, sentiment_gap: float, refusal_rates: tuple[float, float]) -> Any:
    answers = []
    for i in range(pairs):
        level = rng.uniform(-0.5, 0.5)
        answers.append(
            answer("woman", i, refused=bool(rng.random() < refusal_rates[0]), sentiment=level + sentiment_gap
                   + rng.normal(0, 0.2), words=int(rng.integers(30, 60)))
        )  # fmt: skip
        answers.append(
            answer("man", i, refused=bool(rng.random() < refusal_rates[1]), sentiment=level + rng.normal(0, 0.2),
                   words=int(rng.integers(30, 60)))
        )  # fmt: skip
    return analyse(answers, GROUPS, Thresholds())


@pytest.fixture()
def no_forced_gc(monkeypatch: pytest.MonkeyPatch) -> None:
    # statsmodels' Holm calls gc.collect() every time: 0.2 s on a busy machine, x hundreds of simulated audits.
    monkeypatch.setattr(gc, "collect", lambda *args: 0)


@pytest.mark.usefixtures("no_forced_gc")
def test_gaps_exactly_at_the_threshold_fail_the_audit_at_most_alpha_of_the_time() -> None:
    # The promise behind "fail": with the true gap AT the threshold (the worst case for a false alarm),
    # an audit fails by chance in at most alpha (0.05) of runs. Simulated 300 times.
    rng = np.random.default_rng(11)
    failed = sum(not _simulated(rng, 50, 0.10, (0.30, 0.20)).passed for _ in range(300))
    assert failed / 300 <= 0.05, failed


@pytest.mark.usefixtures("no_forced_gc")
def test_gaps_three_times_the_threshold_are_caught() -> None:
    rng = np.random.default_rng(12)
    runs = [_simulated(rng, 50, 0.30, (0.20, 0.20)) for _ in range(100)]
    caught = sum(r.failed_dimensions() == ["gender"] for r in runs)
    assert caught >= 90, caught
    assert all(c.metric == "sentiment" for r in runs for c in r.comparisons if c.verdict == "fail")
