"""What ``/readyz`` tells a caller without a key: the verdict and each component's state, no details.

The full body (deployment URLs and models, breaker windows, store errors, counters) is for callers
with a key that may ``read`` (and for everyone when auth is off, where every caller is the operator).
A probe or a load balancer needs only the status code and, for a human, which component is down.
"""

from __future__ import annotations

from typing import Any


def _deployment_state(status: dict[str, Any]) -> str:
    if status.get("ready") is False:
        return "not_ready"
    breaker = (status.get("breaker") or {}).get("state")
    if breaker in ("open", "half_open"):
        return f"breaker_{breaker}"
    if status.get("healthy") is False:
        return "unhealthy"
    return "ready"


def public_readiness(body: dict[str, Any]) -> dict[str, Any]:
    """The public view of a full ``/readyz`` body: status, per-component state and counts."""
    deployments = {label: _deployment_state(state) for label, state in (body.get("deployments") or {}).items()}
    components: dict[str, str] = {}
    for name, state in body.items():
        if isinstance(state, dict) and isinstance(state.get("healthy"), bool):
            components[name] = "healthy" if state["healthy"] else "unhealthy"  # record, limits, cache…
            if state["healthy"] and state.get("state") == "degraded":
                components[name] = "degraded"  # the record store refused lines that wait for replay
    return {
        "status": body.get("status"),
        "deployments": deployments,
        "deployments_ready": sum(state == "ready" for state in deployments.values()),
        "components": components,
    }
