"""The README's guardrails example is a valid config that builds a working guard stage."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from opsgate.domain.config import parse_config
from opsgate.pipeline.guard import GuardStage

README = (Path(__file__).parent.parent.parent / "README.md").read_text()


def test_readme_guard_example_builds_its_policy() -> None:
    # The guardrails section's example (the quality-SLI section shows a guard block too).
    [example] = [b for b in re.findall(r"```yaml\n(.*?)```", README, flags=re.S) if "name: support-bot" in b]
    tree = yaml.safe_load(example)
    tree["models"] = [{"name": "smollm2", "deployments": [{"type": "llama_cpp"}]}]
    config = parse_config(tree)
    stage = GuardStage.from_config(config)
    policy = stage.engine.policy_for("smollm2", None)
    assert policy is not None and policy.name == "support-bot"
    assert [e.name for e in policy.input] == ["prompt_injection", "secrets", "pii", "banned_terms"]
    assert [e.name for e in policy.output] == ["pii", "system_prompt_leak", "toxicity", "json", "confidence"]
    assert stage.engine.policy_for("other-model", None) is None  # the example covers smollm2 only
