"""What the drift engine reads of a record, including records of odd shapes (never an exception)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from opsgate.drift.features import category, observe
from tests.drift.traffic import record


def test_features_of_a_chat_record() -> None:
    rec = record(random.Random(1), language="de", attack=True, refusal=True, toxic=True, finish_reason="length")
    obs = observe(rec)
    assert obs is not None
    assert obs.language == "de" and obs.prompt_text and "helpful assistant" not in obs.prompt_text
    assert obs.prompt_chars == len(rec["input_text"])
    assert obs.input_failed == ["prompt_injection"] and obs.output_failed == ["toxicity"]
    assert obs.refused and obs.finish_reason == "length" and obs.answered


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": {"purpose": "sentinel"}},
        {"metadata": {"purpose": "eval"}},
        {"endpoint": "embedding"},
        {"model": None},
        {"model": "x" * 500},
    ],
)
def test_records_drift_does_not_read(change: dict[str, Any]) -> None:
    assert observe({**record(random.Random(2)), **change}) is None


@pytest.mark.parametrize(
    "change",
    [
        {"tags": "not a dict"},
        {"tags": {"guard": {"input": "x", "output": [None, 5, {"verdict": "fail", "scanner": "\x00evil" * 50}]}}},
        {"input_text": None, "request": None},
        {"input_text": "\x00\ud800" * 10_000, "request": {"messages": [{"role": "user", "content": [{"text": 5}]}]}},
        {"output_text": None, "finish_reason": {"nested": 1}},
        {"status": 500, "ts": "yesterday"},
        {"finish_reason": "STOP NOW" * 40},
    ],
)
def test_odd_records_are_read_safely(change: dict[str, Any]) -> None:
    obs = observe({**record(random.Random(3)), **change})
    assert obs is not None
    assert all(len(name) <= 40 for name in obs.input_failed + obs.output_failed)
    assert obs.finish_reason in (None, "stop", "other", "length", "none")


def test_category_names_are_bounded() -> None:
    assert category("de") == "de" and category("Tool Calls") == "other" and category(None) == "none"
    assert category("a" * 41) == "other"
