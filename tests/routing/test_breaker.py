"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

from opsgate.domain.reliability_config import BreakerConfig
from opsgate.routing.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_recovers_through_half_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=3, open_seconds=10, half_open_probes=2), clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.state == "closed"
    breaker.record(False)
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.status()["reason"] == "3 consecutive failures"
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.state == "half_open"
    assert breaker.allow() and breaker.allow() and not breaker.allow()  # two probes, no more
    breaker.record(True)
    assert breaker.state == "half_open"
    breaker.record(True)
    assert breaker.state == "closed" and breaker.allow()


def test_failed_probe_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, open_seconds=5), clock)
    breaker.record(False)
    clock.now = 5
    assert breaker.allow()
    breaker.record(False)
    assert breaker.state == "open" and breaker.opened_count == 2


def test_error_rate_over_window() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        BreakerConfig(consecutive_failures=100, error_rate=0.5, min_requests=10, window_seconds=30), clock
    )
    for n in range(9):
        breaker.record(n % 2 == 0)  # 4 failures of 9: under min_requests
    assert breaker.state == "closed"
    breaker.record(False)  # 5 of 10 failed
    assert breaker.state == "open"


def test_old_calls_leave_the_window() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        BreakerConfig(consecutive_failures=100, error_rate=0.5, min_requests=4, window_seconds=10), clock
    )
    breaker.record(False)
    breaker.record(False)
    clock.now = 20
    breaker.record(True)
    breaker.record(True)
    breaker.record(False)
    assert breaker.state == "closed"  # 1 of 3 in the window, under min_requests


def test_disabled_breaker_always_allows() -> None:
    breaker = CircuitBreaker(BreakerConfig(enabled=False, consecutive_failures=1))
    breaker.record(False)
    assert breaker.allow() and breaker.state == "closed"


def test_a_probe_without_a_verdict_frees_its_slot() -> None:
    # A half-open probe that is shed (our own 503) or cancelled is never recorded; without release()
    # its slot stayed taken and the breaker refused every call from then on.
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, open_seconds=5), clock)
    breaker.record(False)
    clock.now = 5.0
    assert breaker.allow() and not breaker.allow()
    breaker.release()
    assert breaker.state == "half_open" and breaker.allow()
    breaker.record(True)
    assert breaker.state == "closed"
