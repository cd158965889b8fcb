"""Checking an answer against the client's JSON schema without trusting the schema.

The schema in ``response_format.json_schema.schema`` is client input, and ``jsonschema`` used as is
would (a) GET any remote ``$ref`` (SSRF: cloud metadata, internal services; synchronously, no
timeout), (b) run ``pattern``/``patternProperties`` with Python ``re`` (catastrophic backtracking:
``^(a+)+$``), (c) switch to a stock validator (Python ``re`` again) wherever a subschema names a
``$schema``, and (d) follow ``$ref`` graphs whose cost doubles per level (``allOf`` of two refs to
the next level). Here:

- ``schema_problem(schema)`` is a pure check (no I/O) the request stage can call up front to refuse
  the request as a client error; it returns why the schema cannot be used, or None.
- references resolve only inside the schema (``#/...``, ``$defs``, ``$anchor``, embedded ``$id``)
  and the bundled meta-schemas: the registry has no retriever, so nothing is ever fetched;
- ``pattern``, ``patternProperties`` and ``additionalProperties`` match with RE2 (linear time); a
  pattern RE2 cannot compile (lookaround, backreference) makes the schema unusable (never ``re``);
- ``uniqueItems`` compares canonical keys in a set (the stock check is quadratic on objects);
- every keyword evaluation counts against a work budget (steps and thread CPU time), so a
  reference graph cannot run for long.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import ValidationError
from jsonschema.validators import Draft7Validator, Draft202012Validator, extend
from jsonschema_specifications import REGISTRY as SPECIFICATIONS  # type: ignore[import-untyped]

from opsgate.guard.base import BoundedLru
from opsgate.guard.linear_re import LinearPattern, compile_linear

MAX_SCHEMA_BYTES = 64 * 1024  # serialized (compact JSON)
MAX_SCHEMA_DEPTH = 32  # nesting of objects and arrays
MAX_STEPS = 200_000  # keyword evaluations per answer
MAX_CPU_S = 0.25  # thread CPU per answer
# Keywords whose stock implementation re-walks subschemas outside the counted keyword calls
# (reference graphs there would run unbounded); OpenAI's strict structured outputs lack them too.
_UNSUPPORTED = ("unevaluatedProperties", "unevaluatedItems")
_DRAFT = referencing.jsonschema.DRAFT202012


class SchemaUnusable(Exception):
    """The schema cannot be used to check answers (a client error): the message says why."""


class _OverBudget(Exception):
    """The check ran past its work budget."""


# ---- the work budget, per thread (a validation runs start to end in the thread that asked for it)
_budget = threading.local()


def _spend() -> None:
    left = _budget.steps = getattr(_budget, "steps", MAX_STEPS) - 1
    if left < 0 or (left & 255 == 0 and time.thread_time() > getattr(_budget, "cpu_deadline", float("inf"))):
        raise _OverBudget


def _counted(keyword: Any) -> Any:
    def run(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _spend()
        return keyword(validator, value, instance, schema)

    return run


# ---- linear-time regular expressions
_patterns: BoundedLru[str, LinearPattern] = BoundedLru(1024)


def _compiled(pattern: str) -> LinearPattern:
    """RE2's compiled ``pattern`` (cached); ``ValueError`` for syntax RE2 lacks."""
    found = _patterns.get(pattern)
    if found is None:
        found = compile_linear(pattern)
        _patterns.put(pattern, found)
    return found


def _utf8_safe(text: str) -> str:
    """RE2 reads UTF-8: a lone surrogate (JSON allows ``"\\ud800"``) becomes U+FFFD."""
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(text) else text


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _search(pattern: str, text: str) -> bool:
    return _compiled(pattern).search(_utf8_safe(text)) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance[:80]!r} does not match {pattern[:200]!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in known and not any(_search(p, k) for p in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = ", ".join(repr(each) for each in sorted(extras)[:20])
        yield ValidationError(f"Additional properties are not allowed ({names} unexpected)")


def _canonical(value: Any) -> Any:
    """A hashable key equal for values JSON Schema calls equal (1 == 1.0, True != 1, key order ignored)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("a", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("o", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("z", None)


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if unique and validator.is_type(instance, "array"):
        seen: set[Any] = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield ValidationError("array has non-unique elements")
                return
            seen.add(key)


_OVERRIDES = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}
_LinearValidator: Any = extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {k: _counted(_OVERRIDES.get(k, fn)) for k, fn in Draft202012Validator.VALIDATORS.items()},
)
# References resolve in the schema itself and the bundled meta-schemas; the default retriever of
# an empty registry raises ``NoSuchResource`` for anything else (nothing is fetched).
_LOCAL_ONLY: referencing.Registry[Any] = referencing.Registry()
_META_CHECK = Draft7Validator(Draft7Validator.META_SCHEMA, format_checker=None)


# ---- the up-front check
def _shape_problem(schema: Any) -> str | None:
    """Depth, and ``$schema`` below the top (it would switch to a stock validator there)."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            return f"nested deeper than {MAX_SCHEMA_DEPTH} levels"
        if isinstance(node, dict):
            if "$schema" in node and node is not schema:
                return "'$schema' is only allowed at the top of the schema"
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return None


def _reference_problem(schema: dict[str, Any]) -> str | None:
    """A ``$ref``/``$dynamicRef`` that does not resolve inside the schema (remote ones are never fetched)."""
    from urllib.parse import urljoin

    root = _DRAFT.create_resource(schema)
    registry = SPECIFICATIONS.combine(_LOCAL_ONLY)
    root_uri = root.id() or ""
    registry = registry.with_resource(root_uri, root).crawl()
    stack = [(root, root_uri)]
    while stack:
        resource, base = stack.pop()
        own = resource.id()
        if own is not None and resource is not root:
            base = urljoin(base, own)
        contents = resource.contents
        if isinstance(contents, dict):
            for keyword in ("$ref", "$dynamicRef"):
                ref = contents.get(keyword)
                if ref is None:
                    continue
                if not isinstance(ref, str):
                    return f"{keyword} must be a string"
                try:
                    registry.resolver(base_uri=base).lookup(ref)
                except referencing.exceptions.Unresolvable:
                    return f"{keyword} {ref[:200]!r} does not resolve inside the schema (references are never fetched)"
        stack.extend((sub, base) for sub in resource.subresources())
    return None


# Keywords that apply their subschemas to the same instance (no step into the answer).
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
MAX_IN_PLACE = 10_000  # evaluations one schema object can lead to on one instance value


def _in_place_problem(schema: dict[str, Any]) -> str | None:
    """References that loop on one value (``{"$ref": "#"}``) or multiply (each level ``allOf`` two refs
    to the next: 2**levels evaluations): the number of in-place evaluations each schema object leads
    to, counted once per object (a post-order walk, no recursion)."""
    registry = SPECIFICATIONS.combine(_LOCAL_ONLY)
    root = _DRAFT.create_resource(schema)
    registry = registry.with_resource(root.id() or "", root).crawl()
    start = registry.resolver(base_uri=root.id() or "")
    counts: dict[int, int] = {}
    on_path: set[int] = set()
    children: dict[int, list[Any]] = {}
    stack: list[tuple[Any, Any, bool]] = [(schema, start, False)]
    while stack:
        node, resolver, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            counts[key] = min(1 + sum(counts.get(id(c), 0) for c in children.pop(key)), MAX_IN_PLACE + 1)
            if counts[key] > MAX_IN_PLACE:
                return f"the schema's references lead to over {MAX_IN_PLACE:,} checks of one value"
            continue
        if key in counts or not isinstance(node, dict):
            continue
        if key in on_path:
            return "the schema's references loop without reading the answer (e.g. {'$ref': '#'})"
        on_path.add(key)
        resolver = resolver.in_subresource(_DRAFT.create_resource(node))
        subs: list[tuple[Any, Any]] = []
        for keyword in _IN_PLACE_ONE:
            subs.append((node.get(keyword), resolver))
        for keyword in _IN_PLACE_MANY:
            value = node.get(keyword)
            if isinstance(value, list):
                subs.extend((v, resolver) for v in value)
        dependent = node.get("dependentSchemas")
        if isinstance(dependent, dict):
            subs.extend((v, resolver) for v in dependent.values())
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if isinstance(ref, str):
                try:
                    resolved = resolver.lookup(ref)
                except referencing.exceptions.Unresolvable:
                    continue  # named by _reference_problem; at run time, SchemaUnusable
                subs.append((resolved.contents, resolved.resolver))
        subs = [(c, r) for c, r in subs if isinstance(c, dict)]
        children[key] = [c for c, _ in subs]
        stack.append((node, resolver, True))
        stack.extend((c, r, False) for c, r in subs)
    return None


def _patterns_problem(schema: Any) -> str | None:
    """A ``pattern`` or ``patternProperties`` key RE2 cannot run (checked where they are schema keywords)."""
    stack = [_DRAFT.create_resource(schema)]
    while stack:
        resource = stack.pop()
        contents = resource.contents
        if isinstance(contents, dict):
            candidates = []
            if isinstance(contents.get("pattern"), str):
                candidates.append(contents["pattern"])
            if isinstance(contents.get("patternProperties"), dict):
                candidates.extend(contents["patternProperties"])
            for pattern in candidates:
                try:
                    _compiled(pattern)
                except ValueError as error:
                    # RE2: linear time, so no lookarounds or backreferences (never Python ``re`` instead).
                    return f"pattern {pattern[:200]!r} is not supported: {str(error)[:200]}"
        stack.extend(resource.subresources())
    return None


def _problem(schema: Any) -> str | None:
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return "the schema must be an object or a boolean"
    shape = _shape_problem(schema)
    if shape is not None:
        return shape
    try:
        size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace"))
    except (TypeError, ValueError, RecursionError):
        return "the schema is not JSON"
    if size > MAX_SCHEMA_BYTES:
        return f"the schema is larger than {MAX_SCHEMA_BYTES // 1024} KB"
    for keyword in _UNSUPPORTED:
        if _mentions(schema, keyword):
            return f"{keyword!r} is not supported"
    # The shape of its keywords, by draft 7's meta-schema: linear in the schema (the schema is the
    # instance here; only the meta-schema's own references are followed) and ~7x cheaper than
    # 2020-12's, whose $dynamicRef resolution costs ~0.5 s on 48 KB.
    error = next(iter(_META_CHECK.iter_errors(schema)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "<root>"
        return f"not a valid JSON Schema at {where}: {error.message[:200]}"
    try:
        return _patterns_problem(schema) or _reference_problem(schema) or _in_place_problem(schema)
    except Exception as error:  # a 2020-12 keyword draft 7 does not know, with a value of the wrong shape
        return f"not a valid JSON Schema ({type(error).__name__} reading its subschemas)"


def _mentions(schema: Any, keyword: str) -> bool:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if keyword in node:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


# ---- checked schemas, by digest (a client sends the same schema with every request)
_Checked = tuple[str | None, Any]
_cache: BoundedLru[bytes, _Checked] = BoundedLru(256)


def _checked(schema: Any) -> _Checked:
    """(why the schema is unusable or None, its validator when usable), cached by the schema's digest."""
    try:
        key = hashlib.blake2b(
            json.dumps(schema, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass"),
            digest_size=16,
        ).digest()
    except (TypeError, ValueError, RecursionError):
        return "the schema is not JSON", None
    found = _cache.get(key)
    if found is not None:
        return found
    problem = _problem(schema)
    validator = None
    if problem is None:
        root = {k: v for k, v in schema.items() if k != "$schema"} if isinstance(schema, dict) else schema
        validator = _LinearValidator(root, registry=_LOCAL_ONLY)
    _cache.put(key, (problem, validator))
    return problem, validator


def schema_problem(schema: Any) -> str | None:
    """Why the gateway cannot check answers against ``schema`` (a client error, for a 400), or None.

    Pure and bounded: no network, no Python ``re``, at most ``MAX_SCHEMA_BYTES`` examined; cached.
    """
    return _checked(schema)[0]


def first_violation(schema: Any, instance: Any) -> str | None:
    """The most relevant way ``instance`` breaks ``schema`` (``"path: message"``), or None if it fits.

    Raises ``SchemaUnusable`` when the schema cannot be used (see ``schema_problem``) or the check
    runs past its work budget (``MAX_STEPS`` keyword evaluations, ``MAX_CPU_S`` of thread CPU).
    """
    problem, validator = _checked(schema)
    if problem is not None:
        raise SchemaUnusable(problem)
    _budget.steps, _budget.cpu_deadline = MAX_STEPS, time.thread_time() + MAX_CPU_S
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    except _OverBudget:
        raise SchemaUnusable("checking the answer against the schema ran past its work budget") from None
    except RecursionError:
        raise SchemaUnusable("the schema's references recurse without end") from None
    except Exception as error:  # a malformed keyword value (UnknownType, TypeError, ...): the client's
        raise SchemaUnusable(f"the schema cannot be used: {type(error).__name__}") from None
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    return f"{where}: {error.message[:200]}"
