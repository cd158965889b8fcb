"""Counterfactual prompt templates: load a YAML/JSON file, validate it, expand it into matched prompt sets.

A file names *dimensions* (gender, age, …), each with *groups*; every group of a dimension gives a value
to the same *slots* (``a_person: "a woman"``, ``people: "women"``). A *template* is a prompt with
``{slot}`` placeholders. Expanding a template over a dimension gives one prompt per group that differ
only in the slot values: a matched set, the unit every comparison pairs on.

Placeholders are substituted by a regular expression, never by ``str.format`` (whose ``{a.__class__}``
field syntax a hostile file could use); ``{{`` and ``}}`` write literal braces, any other brace is an
error. Every problem is collected with the path to it, so a bad file is reported at once, not one
mistake per run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

STARTER = "starter.yaml"
# A templates file is a few KB; the cap stops a runaway or hostile file before YAML parses it.
MAX_FILE_BYTES = 1_000_000
MAX_TEMPLATE_CHARS = 2_000
MAX_SLOT_VALUE_CHARS = 200
MAX_TEMPLATES = 500
MAX_GROUPS = 20
NAME = r"^[a-z][a-z0-9_]{0,47}$"
TEMPLATE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# ``{{`` / ``}}`` escapes, ``{slot}`` placeholders, and a lone brace (always a mistake).
_TOKEN = re.compile(r"\{\{|\}\}|\{([a-z][a-z0-9_]*)\}|[{}]")
# Control characters other than tab and newline have no business in a prompt (NUL truncates in C code).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class TemplatesError(ValueError):
    """A templates file that cannot be used; ``problems`` each name where in the file it is."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


def _clean_text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("contains a control character (NUL or similar)")
    if not value.strip():
        raise ValueError("is blank")
    return value


class Dimension(BaseModel):
    """One demographic dimension: its groups, each mapping slot names to the words that name the group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", max_length=500)
    groups: dict[str, dict[str, str]] = Field(min_length=2, max_length=MAX_GROUPS)

    @field_validator("groups")
    @classmethod
    def _same_slots(cls, groups: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        names = list(groups)
        for name, slots in groups.items():
            if not re.match(NAME, name):
                raise ValueError(f"group name {name[:60]!r} must match {NAME}")
            if not slots:
                raise ValueError(f"group {name!r} gives no slot values")
            for slot, value in slots.items():
                if not re.match(NAME, slot):
                    raise ValueError(f"slot name {slot[:60]!r} in group {name!r} must match {NAME}")
                if len(value) > MAX_SLOT_VALUE_CHARS:
                    raise ValueError(f"{name}.{slot} is longer than {MAX_SLOT_VALUE_CHARS} characters")
                try:
                    _clean_text(value)
                except ValueError as error:
                    raise ValueError(f"{name}.{slot} {error}") from None
                if "{" in value or "}" in value:
                    raise ValueError(f"{name}.{slot} contains a brace (values are inserted as plain text)")
        first = set(groups[names[0]])
        for name in names[1:]:
            if set(groups[name]) != first:
                missing = sorted(first ^ set(groups[name]))
                raise ValueError(f"groups {names[0]!r} and {name!r} define different slots ({', '.join(missing)})")
        return groups

    @property
    def slots(self) -> frozenset[str]:
        """The slot names every group of this dimension fills."""
        return frozenset(next(iter(self.groups.values())))


class Template(BaseModel):
    """One prompt with ``{slot}`` placeholders; ``dimensions`` limits it (default: every one whose slots fit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=TEMPLATE_ID)
    text: str = Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)
    dimensions: list[str] | None = Field(default=None, min_length=1)
    system: str | None = Field(default=None, min_length=1, max_length=MAX_TEMPLATE_CHARS)

    @field_validator("text", "system")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is None:
            return value
        _clean_text(value)
        placeholders(value)  # a stray brace fails here, with the template's path
        return value

    def render(self, slots: dict[str, str]) -> str:
        """The prompt with each placeholder replaced by its slot value."""
        return _substitute(self.text, slots)


class TemplateFile(BaseModel):
    """A whole templates file: provenance, dimensions and templates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    version: int | str = 1
    license: str = Field(default="", max_length=500)
    provenance: str = Field(default="", max_length=2000)
    dimensions: dict[str, Dimension] = Field(min_length=1, max_length=50)
    templates: list[Template] = Field(min_length=1, max_length=MAX_TEMPLATES)


def placeholders(text: str) -> list[str]:
    """The slot names ``text`` uses, in order (ValueError for a brace that is neither a placeholder nor escaped)."""
    found: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise ValueError(
                f"has a stray {token!r} at character {match.start()} (write {{{{ or }}}} for a literal brace)"
            )
        found.append(match.group(1))
    return found


def _substitute(text: str, slots: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return slots[match.group(1)]

    return _TOKEN.sub(replace, text)


@dataclass(frozen=True, slots=True)
class CounterfactualSet:
    """One template expanded over one dimension: a prompt per group, identical except for the group's words.

    ``sample`` numbers repeated draws of the same set; every prompt of a set is sent with the same
    ``seed``, so the only thing that differs between the answers compared is the demographic term.
    """

    dimension: str
    template_id: str
    sample: int
    seed: int
    system: str | None
    prompts: dict[str, str]

    @property
    def key(self) -> str:
        """A stable id of the set within a run."""
        return f"{self.dimension}/{self.template_id}/{self.sample}"


@dataclass(frozen=True, slots=True)
class TemplateSet:
    """A validated templates file and where it came from."""

    source: str
    spec: TemplateFile

    def dimension_names(self) -> list[str]:
        """Dimension names in file order."""
        return list(self.spec.dimensions)

    def templates_for(self, dimension: str) -> list[Template]:
        """The templates that expand over ``dimension``."""
        slots = self.spec.dimensions[dimension].slots
        chosen = []
        for template in self.spec.templates:
            if template.dimensions is not None and dimension not in template.dimensions:
                continue
            used = set(placeholders(template.text)) | set(placeholders(template.system or ""))
            if used and used <= slots:
                chosen.append(template)
        return chosen

    def expand(self, dimensions: list[str] | None = None, samples: int = 1, seed: int = 0) -> list[CounterfactualSet]:
        """Every matched set for ``dimensions`` (default all), ``samples`` draws of each template."""
        out: list[CounterfactualSet] = []
        for dimension in dimensions or self.dimension_names():
            groups = self.spec.dimensions[dimension].groups
            for template in self.templates_for(dimension):
                for sample in range(samples):
                    prompts = {group: template.render(slots) for group, slots in groups.items()}
                    system = template.system
                    out.append(
                        CounterfactualSet(
                            dimension=dimension,
                            template_id=template.id,
                            sample=sample,
                            seed=seed + sample,
                            system=_substitute(system, next(iter(groups.values()))) if system else None,
                            prompts=prompts,
                        )
                    )
        return out


def _check_cross_references(spec: TemplateFile) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for index, template in enumerate(spec.templates):
        where = f"templates[{index}] ({template.id})"
        if template.id in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(template.id)
        used = set(placeholders(template.text))
        if not used:
            problems.append(f"{where}: uses no {{slot}} placeholder, so its prompts would not differ between groups")
        if template.system and placeholders(template.system):
            problems.append(f"{where}.system: placeholders belong in the text (the system prompt is shared)")
        for name in template.dimensions or ():
            if name not in spec.dimensions:
                problems.append(f"{where}.dimensions: no dimension {name!r}")
            elif not used <= spec.dimensions[name].slots:
                missing = ", ".join(sorted(used - spec.dimensions[name].slots))
                problems.append(f"{where}: dimension {name!r} has no slot for {missing}")
        if template.dimensions is None and used and not any(used <= d.slots for d in spec.dimensions.values()):
            problems.append(f"{where}: no dimension defines every slot it uses ({', '.join(sorted(used))})")
    for name, dimension in spec.dimensions.items():
        if not re.match(NAME, name):
            problems.append(f"dimensions.{name[:60]}: name must match {NAME}")
        values = {tuple(sorted(slots.items())) for slots in dimension.groups.values()}
        if len(values) != len(dimension.groups):
            problems.append(f"dimensions.{name}: two groups use exactly the same words")
    return problems


def _pydantic_problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "<root>"
        problems.append(f"{where}: {item['msg']}")
    return problems


def parse_templates(data: Any, source: str = "<data>") -> TemplateSet:
    """A validated ``TemplateSet`` from already-parsed data (TemplatesError listing every problem)."""
    if not isinstance(data, dict):
        raise TemplatesError(source, ["the file must be a mapping with 'name', 'dimensions' and 'templates'"])
    try:
        spec = TemplateFile.model_validate(data)
    except ValidationError as error:
        raise TemplatesError(source, _pydantic_problems(error)) from None
    problems = _check_cross_references(spec)
    if problems:
        raise TemplatesError(source, problems)
    return TemplateSet(source, spec)


def load_templates(path: str | Path | None = None) -> TemplateSet:
    """The templates at ``path`` (YAML or JSON), or the starter set shipped with opsgate when None."""
    if path is None:
        resource = files("opsgate.bias").joinpath("data", STARTER)
        return parse_templates(yaml.safe_load(resource.read_text(encoding="utf-8")), f"starter:{STARTER}")
    source = str(path)
    file = Path(path)
    try:
        if not file.is_file():
            raise TemplatesError(source, ["no such file"])
        if file.stat().st_size > MAX_FILE_BYTES:
            raise TemplatesError(source, [f"larger than {MAX_FILE_BYTES} bytes"])
        raw = file.read_bytes()
    except OSError as error:
        raise TemplatesError(source, [f"cannot read: {error.strerror or error}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TemplatesError(source, [f"not UTF-8 (byte {error.start})"]) from None
    if "\x00" in text:
        raise TemplatesError(source, ["contains a NUL byte"])
    try:
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TemplatesError(source, [f"cannot parse: {first_line[:300]}"]) from None
    except RecursionError:
        raise TemplatesError(source, ["nested too deeply"]) from None
    return parse_templates(data, source)
