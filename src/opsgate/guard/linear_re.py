"""Linear-time patterns for the guard: RE2 (``google-re2``) behind a small typed surface.

Python's ``re`` backtracks: a lookahead like ``^(?=[\\s\\S]*x)`` under ``re.M`` rescans the rest of
the text from every line start, so 25 KB of lines cost ~0.5 s. RE2 runs in time linear in the text
whatever the pattern (no lookarounds, no backreferences, so patterns are written without them).
RE2 takes ``str`` by encoding it to UTF-8 on every call: callers search a sentence as its own
slice rather than passing ``pos``/``endpos`` into a long text, which would re-encode the whole text
once per sentence.

The ``re2`` module also turns every match's UTF-8 byte offsets back into character offsets with a
pass over the bytes before it (``BytesToCharLen``): ``compile_linear(..., ascii_as_bytes=True)``
searches an ASCII text as bytes instead, where the two are the same, for the same matches.

``LinearSet`` runs many patterns in one pass (RE2's ``Set``) and says which of them match somewhere
in a text: one pass over 32 KB costs about what two single-pattern searches do, so callers use it to
skip the patterns that cannot match before running the ones that can (with their groups and spans).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, cast

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


def compile_linear(
    pattern: str, *, ignore_case: bool = False, multiline: bool = False, ascii_as_bytes: bool = False
) -> LinearPattern:
    """``pattern`` compiled by RE2; raises ``ValueError`` for syntax RE2 lacks (lookarounds, backreferences).

    ``ascii_as_bytes``: an ASCII text is searched as its bytes (only ``search``, ``finditer``,
    ``findall`` and ``sub`` on a whole text, the ``LinearPattern`` methods, are offered then).
    """
    source = f"(?m){pattern}" if multiline else pattern
    try:
        compiled = re2.compile(source, _options(ignore_case))
    except re2.error as exc:
        raise ValueError(f"not a linear-time pattern: {exc}") from None
    return _AsciiAsBytes(compiled) if ascii_as_bytes else cast(LinearPattern, compiled)


class _AsciiMatch:
    """A match found in an ASCII text's bytes, read as the text's: offsets are the same, groups ``str``."""

    __slots__ = ("_match",)

    def __init__(self, match: Any) -> None:
        self._match = match

    def group(self, group: int | str = 0) -> str | None:
        found: bytes | None = self._match.group(group)
        return None if found is None else found.decode("ascii")

    def start(self, group: int = 0) -> int:
        start: int = self._match.start(group)
        return start

    def end(self, group: int = 0) -> int:
        end: int = self._match.end(group)
        return end


class _AsciiAsBytes:
    """An RE2 pattern that searches ASCII text as bytes, other text as the ``re2`` module does."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self.pattern: str = compiled.pattern

    @property
    def options(self) -> object:
        """The compiled pattern's RE2 options (``LinearSet`` reads its case rule)."""
        return self._compiled.options

    def search(self, text: str) -> LinearMatch | None:
        """The first match in ``text``."""
        if not text.isascii():
            return cast(LinearMatch | None, self._compiled.search(text))
        match = self._compiled.search(text.encode("ascii"))
        return None if match is None else _AsciiMatch(match)

    def finditer(self, text: str) -> Iterator[LinearMatch]:
        """Every non-overlapping match."""
        if not text.isascii():
            return cast(Iterator[LinearMatch], self._compiled.finditer(text))
        return map(_AsciiMatch, self._compiled.finditer(text.encode("ascii")))

    def findall(self, text: str) -> list[str]:
        """The text of every non-overlapping match (of the whole pattern: for patterns without groups)."""
        if not text.isascii() or self._compiled.groups:
            return cast(list[str], self._compiled.findall(text))
        return [found.decode("ascii") for found in self._compiled.findall(text.encode("ascii"))]

    def sub(self, replacement: str | Callable[[LinearMatch], str], text: str) -> str:
        """``text`` with each match replaced."""
        if not text.isascii():
            return cast(str, self._compiled.sub(replacement, text))
        if isinstance(replacement, str):
            as_bytes: bytes | Callable[[Any], bytes] = replacement.encode("utf-8")
        else:
            as_bytes = lambda match: replacement(_AsciiMatch(match)).encode("utf-8")  # noqa: E731
        return cast(bytes, self._compiled.sub(as_bytes, text.encode("ascii"))).decode("utf-8")


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
