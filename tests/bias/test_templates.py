"""Templates: the starter set, counterfactual expansion, and hostile or broken files refused with their paths."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsgate.bias.templates import MAX_FILE_BYTES, TemplatesError, load_templates, parse_templates

SMALL: dict[str, Any] = {
    "name": "small",
    "license": "CC0-1.0",
    "dimensions": {
        "gender": {"groups": {"woman": {"a_person": "a woman"}, "man": {"a_person": "a man"}}},
        "age": {"groups": {"young": {"a_person": "a young person"}, "old": {"a_person": "an old person"}}},
    },
    "templates": [
        {"id": "t1", "text": "Give {a_person} a tip about {{braces}}."},
        {"id": "t2", "text": "Describe {a_person}.", "dimensions": ["age"], "system": "Be brief."},
    ],
}


def _problems(data: Any) -> list[str]:
    with pytest.raises(TemplatesError) as caught:
        parse_templates(data, "test.yaml")
    return caught.value.problems


def test_starter_covers_the_five_dimensions_and_each_set_differs_only_in_the_group_words() -> None:
    templates = load_templates()
    assert templates.dimension_names() == ["gender", "ethnicity", "religion", "age", "nationality"]
    assert templates.spec.license == "CC0-1.0" and "opsgate" in templates.spec.provenance
    sets = templates.expand(samples=2, seed=7)
    assert len(sets) == 5 * 10 * 2
    for counterfactual in sets:
        groups = templates.spec.dimensions[counterfactual.dimension].groups
        assert set(counterfactual.prompts) == set(groups)
        assert counterfactual.seed == 7 + counterfactual.sample
        # Replace each group's own words by a marker: what is left is the same text for every group.
        skeletons = set()
        for group, prompt in counterfactual.prompts.items():
            for value in sorted(groups[group].values(), key=len, reverse=True):
                prompt = re.sub(rf"\b{re.escape(value)}\b", "<GROUP>", prompt)
            skeletons.add(prompt)
        assert len(skeletons) == 1, counterfactual
        assert len(set(counterfactual.prompts.values())) == len(groups)
        assert "{" not in "".join(counterfactual.prompts.values())


def test_expansion_honours_dimensions_and_escaped_braces() -> None:
    templates = parse_templates(SMALL)
    assert [t.id for t in templates.templates_for("gender")] == ["t1"]
    assert [t.id for t in templates.templates_for("age")] == ["t1", "t2"]
    sets = templates.expand(["age"])
    assert [s.template_id for s in sets] == ["t1", "t2"]
    assert sets[0].prompts == {
        "young": "Give a young person a tip about {braces}.",
        "old": "Give an old person a tip about {braces}.",
    }
    assert sets[1].system == "Be brief." and sets[0].system is None


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["templates"].append({"id": "t3", "text": "Greet {someone}."}), "no dimension defines every slot"),
        (lambda d: d["templates"].append({"id": "t3", "text": "No placeholder here."}), "uses no {slot}"),
        (lambda d: d["templates"].append({"id": "t1", "text": "Hi {a_person}."}), "duplicate id"),
        (lambda d: d["templates"].append({"id": "t3", "text": "Hi {a_person.__class__}."}), "stray '{'"),
        (lambda d: d["templates"].append({"id": "t3", "text": "Hi {0}."}), "stray '{'"),
        (lambda d: d["templates"].append({"id": "t3", "text": "Hi {a_person} }"}), "stray '}'"),
        (lambda d: d["templates"].append({"id": "t3", "text": "Hi\x00 {a_person}"}), "control character"),
        (lambda d: d["templates"].append({"id": "t3", "text": "x" * 3000 + "{a_person}"}), "at most 2000"),
        (lambda d: d["templates"].append({"id": "../etc", "text": "{a_person}"}), "templates.2.id"),
        (
            lambda d: d["templates"].append({"id": "t3", "text": "{a_person}", "dimensions": ["race"]}),
            "no dimension 'race'",
        ),
        (lambda d: d["templates"].append({"id": "t3", "text": "{a_person}", "extra": 1}), "Extra inputs"),
        (lambda d: d["dimensions"]["gender"]["groups"]["man"].update(people="men"), "define different slots"),
        (lambda d: d["dimensions"]["gender"]["groups"].pop("man"), "at least 2"),
        (lambda d: d["dimensions"]["gender"]["groups"]["man"].update(a_person="a {woman}"), "brace"),
        (lambda d: d["dimensions"]["gender"]["groups"]["man"].update(a_person="a woman"), "exactly the same words"),
        (lambda d: d["dimensions"]["gender"]["groups"]["man"].update(a_person=["list"]), "valid string"),
        (lambda d: d["dimensions"]["gender"]["groups"].update({"Bad Name": {"a_person": "x"}}), "must match"),
        (lambda d: d.pop("templates"), "templates: Field required"),
    ],
)
def test_malformed_files_list_each_problem_with_its_path(mutate: Any, expected: str) -> None:
    data = json.loads(json.dumps(SMALL))
    mutate(data)
    problems = _problems(data)
    assert any(expected in problem for problem in problems), problems


def test_not_a_mapping() -> None:
    assert "must be a mapping" in _problems(["a", "list"])[0]
    assert "must be a mapping" in _problems(None)[0]


def test_files_huge_binary_nul_unparsable_or_missing_are_refused(tmp_path: Path) -> None:
    cases = {
        "huge.yaml": b"name: x\n# " + b"a" * (MAX_FILE_BYTES + 1),
        "latin1.yaml": "name: caf\xe9".encode("latin-1"),
        "nul.yaml": b"name: x\x00\n",
        "broken.yaml": b"name: [unclosed\n",
        "deep.json": b"[" * 100_000 + b"]" * 100_000,
    }
    expected = {
        "huge.yaml": "larger than",
        "latin1.yaml": "not UTF-8",
        "nul.yaml": "NUL",
        "broken.yaml": "cannot parse",
        "deep.json": "",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(TemplatesError) as caught:
            load_templates(tmp_path / name)
        assert expected[name] in " ".join(caught.value.problems), (name, caught.value.problems)
    with pytest.raises(TemplatesError, match="no such file"):
        load_templates(tmp_path / "missing.yaml")
    with pytest.raises(TemplatesError, match="no such file"):
        load_templates(tmp_path)  # a directory


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    # Billion laughs: aliases expand to 10^9 strings if anything walks them naively.
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = "\n".join(lines) + "\nname: bomb\ndimensions: *a8\ntemplates: *a8\n"
    (tmp_path / "bomb.yaml").write_text(text)
    with pytest.raises(TemplatesError):
        load_templates(tmp_path / "bomb.yaml")


def test_json_and_yaml_files_load_the_same(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text(json.dumps(SMALL))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(SMALL, sort_keys=False))
    assert load_templates(tmp_path / "t.json").expand() == load_templates(tmp_path / "t.yaml").expand()
