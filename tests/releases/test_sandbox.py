"""Templates that ask for too much time or memory are refused at creation or stopped while rendering."""

from __future__ import annotations

import time
from typing import Any

import pytest

from opsgate.releases.prompts import PromptError, PromptVersion, validate_spec


def _version(content: str, variables: list[str] | None = None) -> PromptVersion:
    messages, declared = validate_spec([{"role": "system", "content": content}], variables or [], {})
    return PromptVersion("pv", None, "t", 1, messages, declared, {}, None, "h", 0.0, None)


@pytest.mark.parametrize(
    "template",
    [
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{% for a in range(10) %}{% for b in range(10) %}x{% endfor %}{% endfor %}",
        "{% for a in range(10) %}{% if a %}{% for b in range(10) %}x{% endfor %}{% endif %}{% endfor %}",
        "{% for a in [1] recursive %}{{ loop([1]) }}{% endfor %}",
        "{% include 'x' %}",
        "{% extends 'x' %}",
        "{% import 'x' as y %}",
        "{% set s = 'ab' %}{% set s = s ~ s %}{{ s }}",
        "{% with s = 'ab' %}{{ s }}{% endwith %}",
        "{% filter upper %}{% for i in range(100000) %}{{ i }}{% endfor %}{% endfilter %}",
        "{{ " + " ~ ".join(["v"] * 65) + " }}",
        "{{ v | indent(1000) }}",
    ],
)
def test_refused_at_creation(template: str) -> None:
    with pytest.raises(PromptError) as error:
        _version(template)
    assert error.value.param == "messages[0].content"


@pytest.mark.parametrize(
    ("template", "variables"),
    [
        ("{{ 'x' * 10000000000 }}", {}),
        ("{{ [1] * 10000000000 }}", {}),
        ("{{ 2 ** 100000000 }}", {}),
        ("{{ (2 ** 60) ** 60 }}", {}),
        ("{{ 'a'.center(1000000000) }}", {}),
        ("{{ range(100000000) | list }}", {}),
        ("{{ v * 100000 }}", {"v": "abcdefgh"}),
        ("{% for i in range(100000) %}{{ v }}{% endfor %}", {"v": "y" * 30_000}),
        ("{{ ''.__class__.__mro__ }}", {}),
        ("{{ v.__class__ }}", {"v": "x"}),
        ("{{ 1 / 0 }}", {}),
        ("{{ v.replace('a', v) }}", {"v": "a" * 30_000}),
        ("{{ v.join(range(100000) | map('string')) }}", {"v": "x" * 1000}),
        ("{{ range(100000) | join(v) }}", {"v": "x" * 1000}),
        ("{{ v.expandtabs(100000) }}", {"v": "\t" * 1000}),
        ("{{ v.ljust(99999) * 3 }}", {"v": "x"}),
        ("{{ '{:>99999999}'.format(1) }}", {}),
        ("{{ '%99999999d' % 1 }}", {}),
        ("{% for i in range(100000) %}{{ '' if v.count('x') else '' }}{% endfor %}", {"v": "y" * 30_000}),
    ],
)
def test_stopped_while_rendering(template: str, variables: dict[str, Any]) -> None:
    version = _version(template, list(variables))
    started = time.perf_counter()
    with pytest.raises(PromptError) as error:
        version.render(variables)
    assert time.perf_counter() - started < 2.0  # refused fast, never after building gigabytes
    assert error.value.status == 400


def test_ordinary_templates_still_work() -> None:
    version = _version(
        "{% for item in items %}- {{ item | title }}\n{% endfor %}{{ '=' * 10 }} {{ 2 ** 10 }} {{ name | upper }}",
        ["items", "name"],
    )
    out = version.render({"items": ["tea", "milk"], "name": "ada"})
    assert out[0]["content"] == "- Tea\n- Milk\n========== 1024 ADA"
    joined = _version("{{ items | join(', ') }} {{ ', '.join(items) }} {{ name.replace('a', 'b') }}", ["items", "name"])
    assert joined.render({"items": ["a", "b"], "name": "ada"})[0]["content"] == "a, b a, b bdb"
