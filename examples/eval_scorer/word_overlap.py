"""An example custom scorer for ``opsgate eval run --scorer word_overlap``.

Install it through an entry point in your package's ``pyproject.toml``::

    [project.entry-points."opsgate.scorers"]
    word_overlap = "examples.eval_scorer.word_overlap:factory"

The factory gets the text after ``:`` in the spec (``word_overlap:ARG``), or None.
"""

from __future__ import annotations

from opsgate.evals.scoring import Sample, Score


class WordOverlap:
    """Share of the reference's words that the answer also uses (best reference), 0-1."""

    name = "word_overlap"
    kind = "score"  # "pass" for a pass/fail check (compared with McNemar's test)
    higher_is_better = True
    needs_logprobs = False

    async def score(self, sample: Sample) -> Score:
        """The best overlap over the item's references."""
        answer = set(sample.output.lower().split())
        best = 0.0
        for reference in sample.item.reference:
            words = set(reference.lower().split())
            if words:
                best = max(best, len(words & answer) / len(words))
        return Score(best)


def factory(arg: str | None) -> WordOverlap:
    """Build the scorer (it takes no argument)."""
    if arg:
        raise ValueError("word_overlap takes no argument")
    return WordOverlap()
