"""Scorers against the reference libraries' own numbers, and the entry point for custom scorers."""

from __future__ import annotations

import math
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from opsgate.evals.dataset import parse_item
from opsgate.evals.judge import POINTWISE_SCHEMA, agreement, parse_verdict
from opsgate.evals.scorers_model import cosine
from opsgate.evals.scoring import Sample, ScorerError, ScorerRegistry
from tests.fake_upstream import FakeUpstream

REGISTRY = ScorerRegistry(extra=[])


def sample(output: str, reference: str | list[str] | None = None, **item: object) -> Sample:
    data: dict[str, object] = {"prompt": "q", **item}
    if reference is not None:
        data["reference"] = reference
    return Sample(parse_item(data), output)


async def score(spec: str, s: Sample) -> tuple[float | None, bool | None]:
    result = await REGISTRY.build(spec).score(s)
    return result.value, result.passed


async def test_exact_contains_regex() -> None:
    assert await score("exact", sample("  Paris ", "paris")) == (1.0, True)
    assert await score("exact", sample("Paris.", ["Lyon", "Paris"])) == (0.0, False)
    assert await score("contains", sample("It is Paris.", "paris")) == (1.0, True)
    assert await score(r"regex:^\d+$", sample("1234")) == (1.0, True)
    assert await score("regex", sample("answer: 42", r"\d{2}")) == (1.0, True)


async def test_regex_is_linear_and_bad_patterns_are_refused() -> None:
    started = time.perf_counter()
    assert await score("regex:(a+)+$", sample("a" * 50_000 + "b")) == (0.0, False)  # backtracking would hang
    assert time.perf_counter() - started < 2.0
    with pytest.raises(ScorerError, match="RE2 cannot compile"):
        REGISTRY.build("regex:(?<=x)y")
    with pytest.raises(ScorerError, match="at most"):
        REGISTRY.build("regex:" + "a" * 5000)


async def test_bleu_chrf_rouge_match_their_libraries() -> None:
    hyp, refs = "the cat sat on the mat today", ["the cat is on the mat", "a cat sat on the mat"]
    expected_bleu = sacrebleu.sentence_bleu(hyp, refs, use_effective_order=True).score
    expected_chrf = sacrebleu.sentence_chrf(hyp, refs).score
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected_rouge = max(rouge.score(r, hyp)["rougeL"].fmeasure for r in refs)
    assert (await score("bleu", sample(hyp, refs)))[0] == pytest.approx(expected_bleu, abs=1e-9)
    assert (await score("chrf", sample(hyp, refs)))[0] == pytest.approx(expected_chrf, abs=1e-9)
    assert (await score("rouge_l", sample(hyp, refs)))[0] == pytest.approx(expected_rouge, abs=1e-12)
    with pytest.raises(ValueError, match="no reference"):
        await score("bleu", sample(hyp))


async def test_reference_free_scorers() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert await score("json_valid", sample('```json\n{"n": 1}\n```')) == (1.0, True)
    assert await score("json_valid", sample("{nope")) == (0.0, False)
    assert await score("json_schema", sample('{"n": 1}', schema=schema)) == (1.0, True)
    assert await score("json_schema", sample('{"n": "x"}', schema=schema)) == (0.0, False)
    assert await score("length", sample("four words right here")) == (21.0, None)
    assert await score("length:words", sample("four words right here")) == (4.0, None)
    assert await score("refusal", sample("I'm sorry, but I can't help with that.")) == (1.0, False)
    assert await score("refusal", sample("The capital is Paris.")) == (0.0, True)
    assert await score("pii_leak", sample("Write to jane.doe@example.com")) == (1.0, False)
    assert await score("pii_leak", sample("The sky is blue.")) == (0.0, True)
    toxic, passed = await score("toxicity", sample("you are a stupid idiot"))
    assert toxic is not None and toxic > 0.5 and passed is False
    clean, passed = await score("toxicity", sample("Have a lovely day."))
    assert clean is not None and clean < 0.5 and passed is True


async def test_confidence_from_logprobs() -> None:
    s = sample("a b")
    s.logprobs = [{"token": "a", "logprob": -0.1}, {"token": " b", "logprob": -0.3}]
    value, _ = await score("confidence", s)
    assert value == pytest.approx(math.exp(-0.2))
    assert (await score("confidence", sample("x")))[0] is None


def test_judge_output_parsing_and_agreement() -> None:
    assert parse_verdict('Sure! {"score": 4, "reason": "good"}', POINTWISE_SCHEMA)["score"] == 4
    for bad in ("no json here", '{"score": 9, "reason": "x"}', '{"score": 3}'):
        with pytest.raises(ValueError):
            parse_verdict(bad, POINTWISE_SCHEMA)
    assert agreement([4, 4, 5]) == pytest.approx(2 / 3)


def test_unknown_and_custom_scorers() -> None:
    with pytest.raises(ScorerError, match="unknown scorer 'nope'"):
        REGISTRY.build("nope")
    with pytest.raises(ScorerError, match="needs a gateway"):
        REGISTRY.build("judge:smollm2")
    entry = EntryPoint(name="word_overlap", value="examples.eval_scorer.word_overlap:factory", group="opsgate.scorers")
    registry = ScorerRegistry(extra=[entry])
    assert "word_overlap" in registry.names()
    scorer = registry.build("word_overlap")
    assert scorer.name == "word_overlap"


async def test_custom_scorer_scores() -> None:
    entry = EntryPoint(name="word_overlap", value="examples.eval_scorer.word_overlap:factory", group="opsgate.scorers")
    scorer = ScorerRegistry(extra=[entry]).build("word_overlap")
    result = await scorer.score(sample("the cat sat", "the cat ran"))
    assert result.value == pytest.approx(2 / 3)


async def test_embedding_similarity_through_the_gateway(tmp_path: Path, upstream: FakeUpstream) -> None:
    from opsgate.domain.config import parse_config
    from opsgate.evals.client import gateway_client

    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "e"}
    config = parse_config(
        {
            "models": [{"name": "emb", "kind": "embedding", "deployments": [deployment]}],
            "record": {"store": f"sqlite:///{tmp_path}/r.db", "journal_dir": str(tmp_path / "j")},
        }
    )
    async with gateway_client(config=config) as client:
        scorer = REGISTRY.build("embedding:emb", client)
        result = await scorer.score(sample("an answer", "a reference"))
    assert result.value == pytest.approx(1.0)  # the fake upstream gives every text the same vector
    body = upstream.requests[-1]["body"]
    assert body["input"] == ["an answer", "a reference"] and body["user"] == "opsgate-eval"
    assert cosine([1.0, 0.0], [0.0, 1.0]) == 0.0
