"""Linear-time patterns for the guard: RE2 (``google-re2``) behind a small typed surface.

Python's ``re`` backtracks: a lookahead like ``^(?=[\\s\\S]*x)`` under ``re.M`` rescans the rest of
the text from every line start, so 25 KB of lines cost ~0.5 s. RE2 runs in time linear in the text
whatever the pattern (no lookarounds, no backreferences, so patterns are written without them).
RE2 takes ``str`` by encoding it to UTF-8 on every call: callers search a sentence as its own
slice rather than passing ``pos``/``endpos`` into a long text, which would re-encode the whole text
once per sentence.

``LinearSet`` runs many patterns in one pass (RE2's ``Set``) and says which of them match somewhere
in a text: one pass over 32 KB costs about what two single-pattern searches do, so callers use it to
skip the patterns that cannot match before running the ones that can (with their groups and spans).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, cast

import re2  # type: ignore[import-untyped]


class LinearMatch(Protocol):
    """The parts of a match object the guard uses."""

    def group(self, group: int | str = 0) -> str | None:
        """A group's text (None if it did not take part)."""
        ...

    def start(self, group: int = 0) -> int:
        """Where a group starts."""
        ...

    def end(self, group: int = 0) -> int:
        """Where a group ends."""
        ...


class LinearPattern(Protocol):
    """The parts of a compiled pattern the guard uses (the ``re.Pattern`` methods of the same names)."""

    pattern: str

    def search(self, text: str) -> LinearMatch | None:
        """The first match in ``text``."""
        ...

    def finditer(self, text: str) -> Iterator[LinearMatch]:
        """Every non-overlapping match."""
        ...

    def findall(self, text: str) -> list[str]:
        """The text of every non-overlapping match (patterns here have no groups)."""
        ...

    def sub(self, replacement: str | Callable[[LinearMatch], str], text: str) -> str:
        """``text`` with each match replaced."""
        ...


def _options(ignore_case: bool) -> object:
    options = re2.Options()
    options.log_errors = False  # a pattern RE2 cannot take is reported by the exception, not on stderr
    options.case_sensitive = not ignore_case
    options.max_mem = 64 << 20  # the DFA's cache; RE2 falls back to its (still linear) NFA past it
    return options


def compile_linear(pattern: str, *, ignore_case: bool = False, multiline: bool = False) -> LinearPattern:
    """``pattern`` compiled by RE2; raises ``ValueError`` for syntax RE2 lacks (lookarounds, backreferences)."""
    source = f"(?m){pattern}" if multiline else pattern
    try:
        compiled = re2.compile(source, _options(ignore_case))
    except re2.error as exc:
        raise ValueError(f"not a linear-time pattern: {exc}") from None
    return cast(LinearPattern, compiled)


class LinearSet:
    """Which of several patterns match somewhere in a text, found in one linear pass."""

    def __init__(self, patterns: Sequence[LinearPattern]) -> None:
        # One options object for the set: each pattern's own case rule travels as an inline flag.
        self._set = re2.Set.SearchSet(_options(ignore_case=False))
        for pattern in patterns:
            case_sensitive = getattr(getattr(pattern, "options", None), "case_sensitive", True)
            self._set.Add(pattern.pattern if case_sensitive else f"(?i){pattern.pattern}")
        self._set.Compile()
        self.size = len(patterns)

    def matching(self, text: str) -> frozenset[int]:
        """The indexes (in the order given) of the patterns that match somewhere in ``text``."""
        return frozenset(self._set.Match(text) or ())
