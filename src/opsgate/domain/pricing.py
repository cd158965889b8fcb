"""What a request costs: one deployment label, one price rule, one cost formula for every stage.

The record, the budgets (limits stage) and the cache's ``saved_cost`` all price through a
:class:`PriceBook`, so they cannot disagree: a request costs what the deployment that served it
charges (its own ``price``, else its alias's). A cache hit was served by no deployment; what it
saved is priced at the alias's first deployment, the one an unconfigured router tries first.
"""

from __future__ import annotations

import math
from typing import Any

from opsgate.domain.config import GatewayConfig, ModelAlias, Price


def deployment_label(alias: str, index: int) -> str:
    """The name of ``alias.deployments[index]`` everywhere: records, metrics, breakers, manifests."""
    return f"{alias}#{index}"


def effective_price(alias: ModelAlias, index: int) -> Price | None:
    """The deployment's own price, else its alias's; None when neither is known."""
    return alias.deployments[index].price or alias.price


# Past any real request, and what the stores' count columns hold (PostgreSQL INTEGER): one answer
# claiming 1e308 tokens must not price at infinity and exhaust a shared budget.
MAX_COUNT = (1 << 31) - 1


def is_count(value: Any) -> bool:
    """A token count worth using: absent, or a real, finite number in 0..MAX_COUNT (an upstream may send
    text, objects, booleans, negatives or 1e308 there; they are unknown counts, never an error)."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= MAX_COUNT and (isinstance(value, int) or math.isfinite(value))


def stored_count(value: Any) -> int | None:
    """``value`` as a count column holds it: an integral count in range, else None (unknown)."""
    if value is None or not is_count(value):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def countable_usage(usage: Any) -> bool:
    """Whether ``usage`` holds only counts that can be priced and budgeted."""
    if usage is None:
        return True
    if not isinstance(usage, dict):
        return False
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return (
        (details is None or isinstance(details, dict))
        and is_count(usage.get("prompt_tokens"))
        and is_count(usage.get("completion_tokens"))
        and is_count(cached)
    )


def cost_of(price: Price | None, usage: dict[str, Any] | None) -> float | None:
    """Cost from the price table; unknown price or usage (or counts that are not numbers) stays None, never 0."""
    if price is None or not usage or not countable_usage(usage):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    cached = ((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
    cached_price = price.cached_input_per_million
    if cached_price is None:
        cached, cached_price = 0, 0.0
    return (
        (prompt - cached) * price.input_per_million + cached * cached_price + completion * price.output_per_million
    ) / 1_000_000


class PriceBook:
    """Prices by deployment label (what served), by alias (a cache hit) and the dearest reachable (estimates)."""

    def __init__(self, config: GatewayConfig) -> None:
        self._aliases = {alias.name: alias for alias in config.models}
        self._by_label: dict[str, Price | None] = {
            deployment_label(alias.name, index): effective_price(alias, index)
            for alias in config.models
            for index in range(len(alias.deployments))
        }
        self._ceiling = {alias.name: self._dearest(alias) for alias in config.models}

    def _reachable(self, alias: ModelAlias) -> list[ModelAlias]:
        seen, todo = {alias.name: alias}, [alias]
        while todo:
            for name in todo.pop().routing.fallbacks:
                if name not in seen and name in self._aliases:
                    seen[name] = self._aliases[name]
                    todo.append(seen[name])
        return list(seen.values())

    def _dearest(self, alias: ModelAlias) -> Price | None:
        prices = [effective_price(a, i) for a in self._reachable(alias) for i in range(len(a.deployments))]
        known = [p for p in prices if p is not None]
        if not known:
            return None
        return Price(
            input_per_million=max(p.input_per_million for p in known),
            output_per_million=max(p.output_per_million for p in known),
        )

    def price(self, alias: str | None, deployment: str | None) -> Price | None:
        """The price of what served: the deployment's when known, else the alias's first deployment's."""
        if deployment is not None and deployment in self._by_label:
            return self._by_label[deployment]
        found = self._aliases.get(alias or "")
        if found is None:
            return None
        return effective_price(found, 0) if found.deployments else found.price

    def cost(self, alias: str | None, deployment: str | None, usage: dict[str, Any] | None) -> float | None:
        """What ``usage`` cost on the deployment that served it (see :meth:`price`)."""
        return cost_of(self.price(alias, deployment), usage)

    def unpriced(self, alias: str) -> bool:
        """Whether no deployment the alias can reach has a price (its spend cannot be counted)."""
        return self._ceiling.get(alias) is None

    def estimate(self, alias: str, prompt: int, output: int) -> float | None:
        """The most the request can cost; None when no price is known."""
        return cost_of(self._ceiling.get(alias), {"prompt_tokens": prompt, "completion_tokens": output})
