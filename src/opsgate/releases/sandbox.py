"""The Jinja2 environment prompts render in: the immutable sandbox, bounded in time and memory too.

Jinja2's sandbox stops access to Python internals and mutation, but not a template that asks for
too much: ``{{ 'x' * 10**10 }}``, ``{{ 9**9**9 }}``, ``{{ 'a'.center(10**9) }}``, loops nested over
``range(100000)``, or a macro that calls itself. Templates are written by tenants' keys and rendered
on the gateway for every request that uses them, so each of these would let one tenant take the
process from everyone. Here:

- at creation, a template may not define or call macros, include or import, extend, assign
  (``set``/``with``, so nothing doubles itself step by step), filter a block, nest a loop inside a
  loop (or loop recursively), or name variables more than 64 times: one loop over at most ``range``'s
  items or a bounded variable is the most work a template can ask for;
- ``*`` and ``**`` are intercepted: a repeated string or list may not exceed the rendered limit, a
  product of integers 4,096 bits, an exponent 64 nor its base 2**32; a call with an integer argument
  above 100,000 is refused, and the string methods and filters whose output can outgrow their input
  (``replace``, ``join``, ``center``, ``ljust``, ``rjust``, ``zfill``, ``expandtabs``, ``indent``,
  ``format``…) are checked against the limit before they run, or not offered;
- every value a call, filter or ``+``/``*`` makes is measured (items of nested lists, tuples, dicts
  and sets, characters of strings; measuring stops at the limit) and refused past
  ``MAX_VALUE_SIZE``: a list holding the same big list 100,000 times (``[l] * n``,
  ``dict.fromkeys(range(n), l)``, ``map('default', l)``) is refused when it is made, so the
  single C-level operations a template can ask for (``==``, ``in``, ``sort``, printing a list,
  ``tojson``, ``sum``) walk at most that much; ``sum`` adds numbers only;
- rendering streams (``generate``) and stops as soon as the output passes the limit, and runs
  under a trace function (``sys.settrace``, this thread, only while it renders) that raises once it
  has taken ``MAX_RENDER_SECONDS``: at every Python call, generator step and line, the template's
  own code and the filters' alike, so a ``select('in', ...)`` over a large range, a ``{% for %}``
  that prints nothing, ``lipsum(100000)`` or a filter's own loop are stopped at the deadline, not
  after the piece they are in. What is left between two checks is one C-level operation on values
  of at most ``MAX_VALUE_SIZE``: milliseconds. So one render holds the event loop (it runs there:
  ordinary templates take microseconds) for about ``MAX_RENDER_SECONDS`` at most.
"""

from __future__ import annotations

import functools
import operator
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_environment
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT_CHARS = 256 * 1024
MAX_CALL_INT = 100_000
MAX_RENDER_SECONDS = 0.1  # on the event loop: ordinary templates take microseconds
MAX_NAME_REFERENCES = 64
MAX_VALUE_SIZE = 256 * 1024  # items (nested, counted again where shared) and characters of one value
_FORBIDDEN = (
    nodes.Macro,
    nodes.CallBlock,
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.Extends,
    nodes.Assign,
    nodes.AssignBlock,
    nodes.With,
    nodes.FilterBlock,
)
# Filters whose output can be far larger than their input (or that format with a width): not offered.
_UNSAFE_FILTERS = ("replace", "indent", "center", "format", "wordwrap", "batch", "urlize", "xmlattr", "join")
_GROWING_METHODS = {"replace", "join", "center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map"}


# A template made only of these nodes, with at most _MAX_CHEAP_FILTERS filters and tests, each filter
# one linear pass in C (not ``title``: a Python loop per word), and no call, loop, literal list or
# operator, does work bounded by its variables' size (32 KiB each, 64 names): it renders without the
# trace function, which costs 3-4x the time of an ordinary render.
_CHEAP_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Slice,
    nodes.If,
    nodes.Test,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.CondExpr,
    nodes.Concat,
    nodes.Keyword,
    nodes.Filter,
)
_CHEAP_FILTERS = frozenset(
    {"upper", "lower", "capitalize", "trim", "default", "d", "length", "count", "string", "e", "escape"}
    | {"first", "last", "int", "float", "round", "abs", "wordcount", "safe", "tojson"}
)
_MAX_CHEAP_FILTERS = 16


def _is_cheap(tree: nodes.Template) -> bool:
    filters = 0
    for node in tree.find_all(nodes.Node):
        if type(node) not in _CHEAP_NODES:
            return False
        if isinstance(node, nodes.Filter | nodes.Test):
            filters += 1
            if isinstance(node, nodes.Filter) and node.name not in _CHEAP_FILTERS:
                return False
    return filters <= _MAX_CHEAP_FILTERS


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with limits on repetition, powers, call sizes and output."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self) -> None:
        # autoescape off: the output is chat text, not HTML. StrictUndefined: a typo is an error, not "".
        super().__init__(undefined=StrictUndefined, autoescape=False)
        for name in _UNSAFE_FILTERS:
            self.filters.pop(name, None)
        self.filters["join"] = _join
        self.filters["sum"] = _sum
        for name, function in list(self.filters.items()):
            self.filters[name] = _measured(function)

    def from_string(self, source: Any, globals: Any = None, template_class: Any = None) -> Any:
        """The template, marked ``opsgate_cheap`` when it may render without the trace function."""
        template = super().from_string(source, globals, template_class)
        cheap = isinstance(source, str) and _is_cheap(self.parse(source))
        template.opsgate_cheap = cheap  # type: ignore[attr-defined]
        return template

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        """``*`` and ``**`` with their operands' sizes checked first."""
        if op == "%":
            if isinstance(left, str):  # printf-style formatting takes widths: '%999999999d' % 1
                raise SecurityError("%-formatting of strings is not available in prompt templates")
            return operator.mod(left, right)
        if op == "**":
            if _is_int(left) and _is_int(right) and (right > 64 or abs(left) > 2**32):
                raise SecurityError("the power is too large for a prompt template")
            return operator.pow(left, right)
        if op == "+":
            sequences = isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
            if sequences and value_size(left) + value_size(right) > MAX_VALUE_SIZE:
                raise SecurityError("the sum is too large for a prompt template")
            return operator.add(left, right)
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and _is_int(times):
                    size = len(seq) if isinstance(seq, str) else value_size(seq)
                    if size * times > MAX_OUTPUT_CHARS:
                        raise SecurityError("the repetition is too large for a prompt template")
            if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > 4096:
                raise SecurityError("the product is too large for a prompt template")
            return operator.mul(left, right)
        return super().call_binop(context, op, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Any call with an integer argument above ``MAX_CALL_INT`` is refused."""
        for value in (*args, *kwargs.values()):
            if _is_int(value) and abs(value) > MAX_CALL_INT:
                raise SecurityError(f"a call argument above {MAX_CALL_INT} in a prompt template")
        # The sandbox hands str.format out wrapped (functools.update_wrapper keeps name and __wrapped__).
        owner = getattr(__obj, "__self__", None) or getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        if isinstance(owner, str) and getattr(__obj, "__name__", "") in _GROWING_METHODS:
            if __obj.__name__ == "join" and args:
                args = (list(args[0]), *args[1:])  # measured, then joined: a generator is read once
            _check_growth(owner, __obj.__name__, args)
        return _checked(super().call(__context, __obj, *args, **kwargs))


class RenderTimeout(SecurityError):
    """The render took more than ``MAX_RENDER_SECONDS``."""


class _OutOfTime(BaseException):
    """Raised by the render's trace function; a BaseException, so no filter's ``except Exception``
    (nor jinja's own handler) takes it for the template's error and carries on."""


_NESTED = (list, tuple, dict, set, frozenset)
_SCALARS = frozenset({int, float, bool, type(None)})


def value_size(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """Items of ``value`` counted through nested lists, tuples, dicts and sets (again each time a
    container is shared), plus the characters of its strings; the count stops once it passes
    ``limit``, so measuring costs at most that many steps."""
    if isinstance(value, str | bytes):
        return len(value)
    if not isinstance(value, _NESTED):
        return 1
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, _NESTED):
            total += len(item)
            if total > limit:
                break
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif not set(map(type, item)) <= _SCALARS:  # a flat list of numbers: its length is its size
                stack.extend(item)
        if total > limit:
            break
    return total


def _checked(value: Any) -> Any:
    if isinstance(value, _NESTED) and value_size(value) > MAX_VALUE_SIZE:
        raise SecurityError(f"a value in a prompt template may hold {MAX_VALUE_SIZE} items and characters")
    return value


def _measured(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose result is refused past ``MAX_VALUE_SIZE`` (jinja's pass-argument marker kept)."""

    @functools.wraps(function)  # copies __dict__, so jinja_pass_arg too
    def measured(*args: Any, **kwargs: Any) -> Any:
        return _checked(function(*args, **kwargs))

    return measured


def _check_growth(text: str, method: str, args: tuple[Any, ...]) -> None:
    """Refuse a string method whose result would pass the output limit, before it runs."""
    if method in ("format", "format_map"):
        raise SecurityError("str.format is not available in prompt templates; use {{ }} instead")
    if method == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = text.count(args[0]) if args[0] else len(text) + 1
        size = len(text) + count * max(0, len(args[1]) - len(args[0]))
    elif method == "join" and args:
        items = args[0]
        size = len(text) * len(items) + sum(len(str(i)) for i in items[:MAX_OUTPUT_CHARS])
    elif method == "expandtabs":
        size = len(text) * (args[0] if args and _is_int(args[0]) else 8)
    else:  # center, ljust, rjust, zfill: the width
        size = max(len(text), args[0] if args and _is_int(args[0]) else 0)
    if size > MAX_OUTPUT_CHARS:
        raise SecurityError(f"str.{method} would make more than {MAX_OUTPUT_CHARS} characters")


def _join(value: Any, d: str = "", attribute: Any = None) -> str:
    """The ``join`` filter, bounded: separators times items may not pass the output limit."""
    items = [str(i if attribute is None else getattr(i, str(attribute), "")) for i in value]
    if len(str(d)) * len(items) + sum(len(i) for i in items) > MAX_OUTPUT_CHARS:
        raise SecurityError("join would make too much text for a prompt template")
    return str(d).join(items)


@pass_environment
def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """The ``sum`` filter for numbers only: ``sum(lists, start=[])`` copies quadratically in C."""
    if not isinstance(start, int | float) or isinstance(start, bool):
        raise SecurityError("sum adds numbers in a prompt template")
    total = start
    getter = make_attrgetter(environment, attribute) if attribute is not None else None
    for item in iterable:
        value = item if getter is None else getter(item)
        if not isinstance(value, int | float):
            raise SecurityError("sum adds numbers in a prompt template")
        total = total + value
    return total


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_template(environment: PromptEnvironment, source: str) -> str | None:
    """Why ``source`` may not be a prompt template, or None (a syntax error raises TemplateSyntaxError)."""
    tree = environment.parse(source)
    environment.compile(tree)  # an unknown filter or test is an error now, not at the first request
    for node in tree.find_all(_FORBIDDEN):
        return f"{type(node).__name__.lower()} is not allowed in a prompt template"
    if sum(1 for _ in tree.find_all(nodes.Name)) > MAX_NAME_REFERENCES:
        return f"a prompt template may name variables at most {MAX_NAME_REFERENCES} times"
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            return "recursive loops are not allowed in a prompt template"
        for inner in (*loop.body, *loop.else_):
            if isinstance(inner, nodes.For) or any(True for _ in inner.find_all(nodes.For)):
                return "a loop inside a loop is not allowed in a prompt template"
    return None


def render_bounded(template: Any, variables: dict[str, Any], limit: int = MAX_OUTPUT_CHARS) -> str | None:
    """The rendered text, or None once it passes ``limit`` characters (rendering stops there); a
    SecurityError once it has taken ``MAX_RENDER_SECONDS`` (checked at every Python call, generator
    step and line while it renders, through this thread's trace function)."""
    parts: list[str] = []
    size = 0
    clock = time.perf_counter
    deadline = clock() + MAX_RENDER_SECONDS

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if clock() > deadline:
            raise _OutOfTime
        return tracer

    stream: Iterator[str] = template.generate(**variables)
    previous = sys.gettrace()  # a debugger's or coverage's, put back afterwards
    if not getattr(template, "opsgate_cheap", False):
        sys.settrace(tracer)
    try:
        for piece in stream:
            size += len(piece)
            if size > limit:
                return None
            if clock() > deadline:  # also here: were the trace function ever unset
                raise _OutOfTime
            parts.append(piece)
    except _OutOfTime:
        raise RenderTimeout(f"the template took more than {MAX_RENDER_SECONDS:g} s to render") from None
    finally:
        sys.settrace(previous)
        stream.close()  # type: ignore[attr-defined]
    return "".join(parts)
