"""The scorer contract and the registry that builds scorers from specs (``bleu``, ``regex:^\\d+$``).

A scorer looks at one answer (and the item's references, schema, logprobs) and returns a
``Score``: a ``value`` (higher is better unless the scorer says ``higher_is_better = False``) and,
for pass/fail checks, ``passed``. Pass/fail scorers are compared with McNemar's test, the others
with Wilcoxon's. Scorers are async so that model-backed ones (embeddings, judges) fit the same
loop; the rest return at once.

Custom scorers: any installed package can add one through the ``opsgate.scorers`` entry point
group; the entry point names a factory ``factory(arg: str | None) -> Scorer`` (see
``examples/eval_scorer/`` and README "Evaluation").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol

from opsgate.evals.dataset import DatasetItem

if TYPE_CHECKING:
    from opsgate.evals.client import GatewayClient

ENTRY_POINT_GROUP = "opsgate.scorers"
MODEL_SCORERS = ("embedding", "judge")


@dataclass
class Sample:
    """What a scorer sees: the item, the model's answer and what the call returned beside it."""

    item: DatasetItem
    output: str
    logprobs: list[dict[str, Any]] | None = None
    model: str | None = None


@dataclass
class Score:
    """One scorer's verdict on one sample."""

    value: float | None
    passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """As stored in ``eval_scores``."""
        return {"value": self.value, "passed": self.passed, "details": self.details or None}


class Scorer(Protocol):
    """One metric. ``name`` is its column in results; ``kind`` is ``pass`` (pass/fail) or ``score``."""

    name: str
    kind: str
    higher_is_better: bool
    needs_logprobs: bool

    async def score(self, sample: Sample) -> Score:
        """Score one sample."""
        ...


class ScorerError(ValueError):
    """A scorer spec that cannot be built (unknown name, bad argument)."""


Factory = Callable[[str | None], Scorer]


def no_arg(cls: Callable[[], Scorer]) -> Factory:
    """The factory of a built-in scorer that takes no argument (``bleu``, not ``bleu:x``)."""

    def factory(arg: str | None) -> Scorer:
        if arg:
            raise ValueError("takes no argument")
        return cls()

    return factory


class ScorerRegistry:
    """Built-in scorers plus those from the ``opsgate.scorers`` entry points."""

    def __init__(self, extra: Iterable[EntryPoint] | None = None) -> None:
        from opsgate.evals.scorers_free import FREE_SCORERS
        from opsgate.evals.scorers_reference import REFERENCE_SCORERS

        self.factories: dict[str, Factory] = {**REFERENCE_SCORERS, **FREE_SCORERS}
        self._entry_points = {ep.name: ep for ep in (entry_points(group=ENTRY_POINT_GROUP) if extra is None else extra)}

    def names(self) -> list[str]:
        """Every scorer name known (built-in and installed)."""
        return sorted({*self.factories, *MODEL_SCORERS, *self._entry_points})

    def build(
        self,
        spec: str,
        client: GatewayClient | None = None,
        metadata: dict[str, str] | None = None,
        repeats: int = 3,
    ) -> Scorer:
        """A scorer from ``name`` or ``name:argument``; model-backed ones (``embedding``, ``judge``)
        need the gateway ``client``."""
        from opsgate.evals.scorers_model import model_scorer

        name, _, arg = spec.partition(":")
        name = name.strip()
        if name in MODEL_SCORERS:
            if client is None:
                raise ScorerError(f"scorer '{name}' calls a model: it needs a gateway")
            try:
                built = model_scorer(name, arg or None, client, metadata or {}, repeats)
            except ValueError as error:
                raise ScorerError(f"scorer '{spec}': {error}") from None
            assert built is not None
            return built
        factory = self.factories.get(name)
        if factory is None and name in self._entry_points:
            loaded = self._entry_points[name].load()
            if not callable(loaded):
                raise ScorerError(f"entry point {name} of {ENTRY_POINT_GROUP} is not a factory")
            factory = loaded
        if factory is None:
            raise ScorerError(f"unknown scorer '{name}'; known: {', '.join(self.names())}")
        try:
            return factory(arg or None)
        except (ValueError, TypeError) as error:
            raise ScorerError(f"scorer '{spec}': {error}") from None


def references_of(sample: Sample) -> list[str]:
    """The item's references (a scorer that needs one fails clearly without)."""
    if not sample.item.reference:
        raise ValueError("the item has no reference")
    return sample.item.reference
