"""What ``/readyz`` tells a caller without a key: the verdict, each component's state, deployment counts.

The full body (deployment URLs and models, breaker windows, store errors, counters) is for callers
with a key that may ``read`` (and for everyone when auth is off, where every caller is the operator).
A probe or a load balancer needs only the status code and, for a human, which component is down.
Deployments are counted by state, not listed: their labels (``alias#n``) name the operator's aliases,
which a tenant key cannot even confirm by guessing in ``/v1`` (an alias it may not call answers as
unknown), so a caller with no key must not read them here.
"""

from __future__ import annotations

from collections import Counter
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
    states = [_deployment_state(state) for state in (body.get("deployments") or {}).values()]
    components: dict[str, str] = {}
    for name, state in body.items():
        if isinstance(state, dict) and isinstance(state.get("healthy"), bool):
            components[name] = "healthy" if state["healthy"] else "unhealthy"  # record, limits, cache…
            if state["healthy"] and state.get("state") == "degraded":
                components[name] = "degraded"  # the record store refused lines that wait for replay
    return {
        "status": body.get("status"),
        "deployment_states": dict(sorted(Counter(states).items())),
        "deployments_ready": states.count("ready"),
        "deployments_total": len(states),
        "components": components,
    }
