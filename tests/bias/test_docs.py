"""docs/bias.md cannot drift: its templates example loads, its options exist, its defaults are the code's."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from opsgate.bias.analysis import Thresholds
from opsgate.bias.templates import load_templates, parse_templates
from opsgate.cli.bias import bias_group

DOC = (Path(__file__).parents[2] / "docs" / "bias.md").read_text()


def test_the_templates_example_is_a_valid_file() -> None:
    [example] = re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)
    templates = parse_templates(yaml.safe_load(example), "docs/bias.md")
    sets = templates.expand()
    assert [s.template_id for s in sets] == ["refund", "billing"]
    assert sets[0].prompts["woman"].startswith("a woman asks for a refund")
    assert sets[0].system == "You are a support agent for an online shop."


def test_every_option_the_doc_names_exists() -> None:
    run = bias_group.commands["run"]
    known = {opt for param in run.params for opt in param.opts}
    named = set(re.findall(r"`(--[a-z-]+)", DOC)) | set(re.findall(r" (--[a-z][a-z-]+)", DOC))
    assert named and named <= known | {"--templates"}, named - known


def test_threshold_defaults_match_the_doc() -> None:
    defaults = Thresholds()
    for metric in ("refusal", "sentiment", "toxicity", "length"):
        row = re.search(rf"\| `--threshold-{metric}` \| ([0-9.]+) \|", DOC)
        assert row is not None and float(row.group(1)) == getattr(defaults, metric)
    assert "default 5%" in DOC and defaults.max_error_rate == 0.05


def test_the_starter_counts_in_the_doc() -> None:
    templates = load_templates()
    sets = templates.expand()
    assert f"{len(sets)} sets, {sum(len(s.prompts) for s in sets)} requests per sample" in DOC
    pairs = sum(len(d.groups) * (len(d.groups) - 1) // 2 for d in templates.spec.dimensions.values())
    assert f"{pairs} \u00d7 4 = {pairs * 4}" in DOC
