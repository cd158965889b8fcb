"""Orders an alias's deployments for one request by the configured strategy.

Every strategy returns all deployments (best first), so retries move on to the next one;
deployments whose breaker is open or whose health check fails go to the back, not away — when
everything is down, trying is better than refusing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from opsgate.domain.reliability_config import RoutingConfig
from opsgate.routing.deployment import DeploymentHandle


def _weighted(handles: Sequence[DeploymentHandle], rng: random.Random) -> list[DeploymentHandle]:
    # Weighted sampling without replacement (Efraimidis-Spirakis): key = u^(1/w); weight 0 = backup only.
    def key(handle: DeploymentHandle) -> float:
        return rng.random() ** (1.0 / handle.weight) if handle.weight > 0 else -1.0

    return sorted(handles, key=key, reverse=True)


def order(handles: Sequence[DeploymentHandle], routing: RoutingConfig, rng: random.Random) -> list[DeploymentHandle]:
    """Deployments in the order to try them."""
    strategy = routing.strategy
    if strategy == "weighted":
        ranked = _weighted(handles, rng)
    elif strategy == "least_busy":
        ranked = sorted(handles, key=lambda h: (h.in_flight / max(h.weight, 1e-9), rng.random()))
    elif strategy == "lowest_latency":
        if rng.random() < routing.exploration:
            ranked = list(handles)
            rng.shuffle(ranked)  # explore: a recovered deployment gets measured again
        else:
            # Never measured sorts first, so every deployment gets a latency estimate.
            ranked = sorted(
                handles, key=lambda h: (h.latency_ewma_ms if h.latency_ewma_ms is not None else -1.0, rng.random())
            )
    else:  # cost
        ranked = sorted(handles, key=lambda h: (h.cost_rank(), rng.random()))
    available = [h for h in ranked if h.healthy and h.breaker.state != "open"]
    unavailable = [h for h in ranked if not (h.healthy and h.breaker.state != "open")]
    return available + unavailable
