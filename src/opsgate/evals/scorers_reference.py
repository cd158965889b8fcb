"""Reference-based scorers: exact, contains, regex, BLEU and chrF (sacrebleu), ROUGE-L (rouge-score).

Against several references an item scores its best match (BLEU and chrF use sacrebleu's own
multi-reference scoring). Regular expressions run on RE2, which is linear in the text: a pattern
such as ``(a+)+$`` cannot hang a run, and one RE2 cannot compile is an error when the run starts.
"""

from __future__ import annotations

from typing import Any

from opsgate.evals.scoring import Factory, Sample, Score, no_arg, references_of

MAX_PATTERN_CHARS = 2000


def _normal(text: str) -> str:
    return " ".join(text.strip().split()).casefold()


class _Base:
    kind = "pass"
    higher_is_better = True
    needs_logprobs = False
    name = ""


class ExactMatch(_Base):
    """Whitespace- and case-normalised equality with any reference."""

    name = "exact"

    async def score(self, sample: Sample) -> Score:
        """1 when the answer equals a reference."""
        answer = _normal(sample.output)
        passed = any(answer == _normal(r) for r in references_of(sample))
        return Score(float(passed), passed)


class Contains(_Base):
    """The answer contains a reference (case-insensitive)."""

    name = "contains"

    async def score(self, sample: Sample) -> Score:
        """1 when any reference occurs in the answer."""
        answer = _normal(sample.output)
        passed = any(_normal(r) in answer for r in references_of(sample))
        return Score(float(passed), passed)


class RegexMatch(_Base):
    """The answer matches a pattern (the spec's argument, else each reference as a pattern), on RE2."""

    name = "regex"

    def __init__(self, pattern: str | None) -> None:
        import re2  # type: ignore[import-untyped]

        self._re2: Any = re2
        self._options = re2.Options()
        self._options.max_mem = 8 << 20
        self._options.log_errors = False
        self.pattern = self._compile(pattern) if pattern else None

    def _compile(self, pattern: str) -> Any:
        if len(pattern) > MAX_PATTERN_CHARS or "\x00" in pattern:
            raise ValueError(f"a pattern must be at most {MAX_PATTERN_CHARS} characters, without NUL")
        try:
            return self._re2.compile(pattern, self._options)
        except self._re2.error as error:
            raise ValueError(f"RE2 cannot compile the pattern: {error}") from None

    async def score(self, sample: Sample) -> Score:
        """1 when the pattern is found anywhere in the answer."""
        patterns = [self.pattern] if self.pattern is not None else [self._compile(r) for r in references_of(sample)]
        passed = any(p.search(sample.output) is not None for p in patterns)
        return Score(float(passed), passed)


class Bleu(_Base):
    """Sentence BLEU (sacrebleu, effective order), 0-100."""

    name = "bleu"
    kind = "score"

    def __init__(self) -> None:
        from sacrebleu.metrics.bleu import BLEU

        self.metric = BLEU(effective_order=True)

    async def score(self, sample: Sample) -> Score:
        """sacrebleu's sentence_score against all references."""
        return Score(float(self.metric.sentence_score(sample.output, references_of(sample)).score))


class ChrF(_Base):
    """Sentence chrF (sacrebleu), 0-100."""

    name = "chrf"
    kind = "score"

    def __init__(self) -> None:
        from sacrebleu.metrics.chrf import CHRF

        self.metric = CHRF()

    async def score(self, sample: Sample) -> Score:
        """sacrebleu's sentence_score against all references."""
        return Score(float(self.metric.sentence_score(sample.output, references_of(sample)).score))


class RougeL(_Base):
    """ROUGE-L F-measure (rouge-score, with stemming), best over references, 0-1."""

    name = "rouge_l"
    kind = "score"

    def __init__(self) -> None:
        from rouge_score import rouge_scorer  # type: ignore[import-untyped]

        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    async def score(self, sample: Sample) -> Score:
        """The best F-measure over the references."""
        best = max(self.scorer.score(r, sample.output)["rougeL"].fmeasure for r in references_of(sample))
        return Score(float(best))


REFERENCE_SCORERS: dict[str, Factory] = {
    "exact": no_arg(ExactMatch),
    "contains": no_arg(Contains),
    "regex": RegexMatch,
    "bleu": no_arg(Bleu),
    "chrf": no_arg(ChrF),
    "rouge_l": no_arg(RougeL),
}
