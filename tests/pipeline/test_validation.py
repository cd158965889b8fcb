"""Turning pydantic locations into OpenAI ``param`` paths; numbers and nesting JSON cannot carry."""

import enum
import math
import random

import pytest

from opsgate.domain.errors import InvalidRequestError
from opsgate.domain.requests import ChatCompletionRequest
from opsgate.pipeline.validation import INT_MAX, INT_MIN, MAX_DEPTH, _bad, _explain, check_values, param_path


def test_param_paths() -> None:
    assert param_path(("messages", 0, "role")) == "messages[0].role"
    assert param_path(("stop", "list[str]", 4)) == "stop[4]"
    assert param_path(("response_format", "type")) == "response_format.type"
    assert param_path(()) is None


def test_values_json_cannot_carry_are_rejected_with_their_path() -> None:
    body = ChatCompletionRequest.model_validate_json(
        b'{"model": "m", "messages": [{"role": "user", "content": "x", "meta": {"ids": [1, 2, 99999999999999999999]}}]}'
    )
    with pytest.raises(InvalidRequestError) as caught:
        check_values(body)
    assert caught.value.param == "messages[0].meta.ids[2]" and caught.value.status == 400
    for literal, param in ((b"NaN", "x"), (b"-Infinity", "x"), (b"1e400", "x"), (b"[[" + b"]]", None)):
        body = ChatCompletionRequest.model_validate_json(
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "x": ' + literal + b"}"
        )
        if param is None:
            check_values(body)  # shallow nesting is fine
            continue
        with pytest.raises(InvalidRequestError) as caught:
            check_values(body)
        assert caught.value.param == param


def test_the_edges_of_the_64_bit_range_pass() -> None:
    check_values({"a": [INT_MIN, INT_MAX, 1.7e308, True, None, "text"]})
    with pytest.raises(InvalidRequestError):
        check_values({"a": INT_MAX + 1})
    with pytest.raises(InvalidRequestError):
        check_values({"a": INT_MIN - 1})


def test_nesting_is_bounded() -> None:
    deep: object = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidRequestError) as caught:
        check_values({"d": deep})
    assert caught.value.param is not None and caught.value.param.startswith("d[0]")


def _explained(value: object) -> str | None:
    try:
        _explain(value)
    except InvalidRequestError as error:
        return error.message
    return None


def test_the_fast_walk_agrees_with_the_explaining_walk() -> None:
    # check_values scans without paths first; it must refuse exactly what the walk with paths refuses.
    rng = random.Random(7)

    class Flag(enum.IntEnum):
        ON = 1

    leaves: list[object] = [
        None,
        "s",
        True,
        0,
        INT_MAX,
        INT_MIN,
        INT_MAX + 1,
        INT_MIN - 1,
        1.5,
        math.inf,
        math.nan,
        Flag.ON,
        b"raw",
        (1, 2),
        2.0**70,
    ]

    def make(depth: int) -> object:
        if depth > 3 and rng.random() < 0.5:
            return rng.choice(leaves)
        kind = rng.random()
        if kind < 0.3:
            return {f"k{i}": make(depth + 1) for i in range(rng.randint(0, 3))}
        if kind < 0.6:
            return [make(depth + 1) for _ in range(rng.randint(0, 3))]
        return rng.choice(leaves)

    for _ in range(3000):
        value = make(0)
        try:
            check_values(value)
            got = None
        except InvalidRequestError as error:
            got = error.message
        assert got == _explained(value)
    deep: object = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    assert _bad(deep, 0) and _explained(deep) is not None
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert not _bad(body, 0)
    body_extra = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "x_extra": {"n": math.inf}}
    )
    assert _bad(body_extra, 0) == (_explained(body_extra) is not None)
