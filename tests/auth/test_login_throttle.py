"""The failed-login counter behind ``POST /ui/login``'s 429 (probe 2026-12-06 L4), with a clock the test moves."""

from __future__ import annotations

import pytest

from opsgate.auth.login_throttle import LoginThrottle
from opsgate.domain.auth_config import UiSessionConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_refused_after_max_failures_until_its_window_ends() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 60, clock)
    for expected in (1, 2, 3):
        assert throttle.retry_after("10.0.0.1") is None
        assert throttle.failed("10.0.0.1") == expected
        clock.now += 10
    assert throttle.retry_after("10.0.0.1") == pytest.approx(30)  # the window started at the first failure
    assert throttle.retry_after("10.0.0.2") is None  # another address is not held back
    clock.now += 30
    assert throttle.retry_after("10.0.0.1") is None  # a new window
    assert throttle.failed("10.0.0.1") == 1
    status = throttle.status()
    assert (status["failed_logins"], status["refused_logins"]) == (4, 1)


def test_memory_is_bounded_dropping_the_oldest_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(1, 60, clock, max_clients=2)
    for address in ("a", "b", "c"):
        throttle.failed(address)
        clock.now += 1
    assert throttle.retry_after("a") is None  # dropped to make room
    assert throttle.retry_after("b") is not None and throttle.retry_after("c") is not None


def test_settings_are_bounded() -> None:
    for wrong in ({"login_max_failures": 0}, {"login_window_seconds": 0}, {"login_window_seconds": 86401}):
        with pytest.raises(ValueError):
            UiSessionConfig(**wrong)
