"""Proportions with Wilson score intervals, from a statistics library rather than by hand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for ``successes`` out of ``trials`` (``trials`` > 0).

    statsmodels' ``proportion_confint(method="wilson")`` (a dependency, so always there). Wilson stays
    inside [0, 1] and behaves at 0 % and 100 %, where the normal approximation collapses to a
    zero-width interval — which is where a guard's numbers usually are.
    """
    from statsmodels.stats.proportion import proportion_confint  # here: statsmodels takes a second to import

    if trials <= 0:
        raise ValueError("trials must be positive")
    if not 0 <= successes <= trials:
        raise ValueError("successes must be between 0 and trials")
    bounds: Any = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    low, high = float(bounds[0]), float(bounds[1])
    # Libraries return 1e-17 / 0.9999999999 at the edges; clamp so 0/n reads as exactly 0.
    return max(0.0, low), min(1.0, high)


@dataclass(frozen=True, slots=True)
class Proportion:
    """``successes`` of ``trials`` with its 95 % Wilson interval (None when there were no trials)."""

    successes: int
    trials: int

    @property
    def rate(self) -> float | None:
        """The point estimate, or None for zero trials."""
        return self.successes / self.trials if self.trials else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95 % Wilson interval, or None for zero trials."""
        return wilson_interval(self.successes, self.trials) if self.trials else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form: counts, rate and interval bounds."""
        interval = self.interval
        return {
            "successes": self.successes,
            "trials": self.trials,
            "rate": self.rate,
            "ci95": list(interval) if interval else None,
        }

    def describe(self) -> str:
        """``93.3% [78.7%, 98.2%] (28/30)`` or ``n/a`` for zero trials."""
        interval = self.interval
        if self.rate is None or interval is None:
            return "n/a"
        return f"{self.rate:.1%} [{interval[0]:.1%}, {interval[1]:.1%}] ({self.successes}/{self.trials})"
