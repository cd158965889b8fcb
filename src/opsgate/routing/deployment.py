"""A deployment as routing sees it: the backend plus its breaker, backpressure, latency and health."""

from __future__ import annotations

import time
from typing import Any

from opsgate.backends.base import Backend
from opsgate.backends.work_queue import WorkQueue
from opsgate.domain.config import ModelAlias, Price
from opsgate.domain.pricing import effective_price
from opsgate.routing.breaker import Breaker
from opsgate.routing.shared_breaker import make_breaker


class DeploymentHandle:
    """Live state of one deployment in this process."""

    def __init__(self, alias: ModelAlias, index: int, backend: Backend) -> None:
        config = alias.deployments[index]
        self.alias = alias.name
        self.backend = backend
        self.label = backend.label
        self.weight = config.weight
        self.price: Price | None = effective_price(alias, index)
        # Shared through Redis when ``breaker.shared`` is set; keyed by label, the same on every replica.
        self.breaker: Breaker = make_breaker(config.breaker, backend.label)
        limits = config.limits
        self.queue = WorkQueue(
            f"deployment {backend.label}",
            slots=limits.max_in_flight,
            max_waiting=limits.max_queue,
            timeout=limits.queue_timeout,
        )
        self.health_check = config.health_check
        self.healthy = True  # until an active health check says otherwise
        self.health_error: str | None = None
        self.latency_ewma_ms: float | None = None
        self.calls = 0
        self.failures = 0

    @property
    def in_flight(self) -> int:
        """Calls running now (including streams still open)."""
        return self.queue.running

    def observe(self, ok: bool, latency_ms: float | None, tenant: str | None = None) -> None:
        """Feed one call's outcome (and whose call it was) into the breaker and the latency average."""
        self.calls += 1
        if not ok:
            self.failures += 1
        self.breaker.record(ok, tenant)
        if ok and latency_ms is not None:
            previous = self.latency_ewma_ms
            self.latency_ewma_ms = latency_ms if previous is None else 0.8 * previous + 0.2 * latency_ms

    def cost_rank(self) -> float:
        """Price per million tokens (input + output) for cost-aware routing; unknown sorts last."""
        if self.price is None:
            return float("inf")
        return self.price.input_per_million + self.price.output_per_million

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` and the admin API."""
        return {
            **self.backend.status(),
            "alias": self.alias,
            "breaker": self.breaker.status(),
            "healthy": self.healthy,
            "health_error": self.health_error,
            "in_flight": self.in_flight,
            "waiting": self.queue.waiting,
            "latency_ewma_ms": None if self.latency_ewma_ms is None else round(self.latency_ewma_ms, 2),
            "calls": self.calls,
            "failures": self.failures,
        }


def now_ms() -> float:
    """A monotonic clock in milliseconds."""
    return time.perf_counter() * 1000.0
