"""Linear-time patterns for the guard: RE2 (``google-re2``) behind a small typed surface.

Python's ``re`` backtracks: a lookahead like ``^(?=[\\s\\S]*x)`` under ``re.M`` rescans the rest of
the text from every line start, so 25 KB of lines cost ~0.5 s. RE2 runs in time linear in the text
whatever the pattern (no lookarounds, no backreferences, so patterns are written without them).
RE2 takes ``str`` by encoding it to UTF-8 on every call: callers search a sentence as its own
slice rather than passing ``pos``/``endpos`` into a long text, which would re-encode the whole text
once per sentence.

The ``re2`` module also turns every match's UTF-8 byte offsets back into character offsets with a
pass over the bytes before it (``BytesToCharLen``): ``compile_linear(..., ascii_as_bytes=True)``
searches the bytes and converts offsets only when asked (an ASCII text's need no converting), and
keeps the last text's UTF-8 for the next pattern. The same matches either way.

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

    ``ascii_as_bytes``: the text is searched as its UTF-8 bytes, offsets converted only when asked
    (only ``search``, ``finditer``, ``findall`` and ``sub`` on a whole text, the ``LinearPattern``
    methods, are offered then).
    """
    source = f"(?m){pattern}" if multiline else pattern
    try:
        compiled = re2.compile(source, _options(ignore_case))
    except re2.error as exc:
        raise ValueError(f"not a linear-time pattern: {exc}") from None
    return _AsciiAsBytes(compiled) if ascii_as_bytes else cast(LinearPattern, compiled)


# The last text encoded for a search, and its UTF-8: callers search one text with many patterns.
_last: tuple[str, bytes] = ("", b"")


def _utf8(text: str) -> bytes:
    """``text`` in UTF-8 (strict, as the ``re2`` module encodes: a lone surrogate raises), the last one kept."""
    global _last
    last = _last  # one read: another thread may replace it
    if last[0] is text:
        return last[1]
    encoded = text.encode("utf-8")
    _last = (text, encoded)
    return encoded


class _BytesMatch:
    """A match found in a text's UTF-8 bytes: groups as ``str``, offsets in characters (counted when asked)."""

    __slots__ = ("_encoded", "_match")

    def __init__(self, match: Any, encoded: bytes) -> None:
        self._match = match
        self._encoded = encoded

    def group(self, group: int | str = 0) -> str | None:
        found: bytes | None = self._match.group(group)
        return None if found is None else found.decode("utf-8")

    def _characters(self, offset: int) -> int:
        if offset <= 0 or self._encoded.isascii():
            return offset
        return len(self._encoded[:offset].decode("utf-8"))

    def start(self, group: int = 0) -> int:
        return self._characters(self._match.start(group))

    def end(self, group: int = 0) -> int:
        return self._characters(self._match.end(group))


class _AsciiAsBytes:
    """An RE2 pattern that searches a text's UTF-8 bytes (kept for the next pattern) with no offset bookkeeping.

    The ``re2`` module encodes the text again for every search and converts each match's byte
    offsets to character offsets; here a match's offsets are converted only if asked for (its
    groups are decoded from the bytes), and an ASCII text's offsets need no conversion at all.
    """

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
        encoded = _utf8(text)
        match = self._compiled.search(encoded)
        return None if match is None else _BytesMatch(match, encoded)

    def finditer(self, text: str) -> Iterator[LinearMatch]:
        """Every non-overlapping match."""
        encoded = _utf8(text)
        return (_BytesMatch(match, encoded) for match in self._compiled.finditer(encoded))

    def findall(self, text: str) -> list[str]:
        """The text of every non-overlapping match (of the whole pattern: for patterns without groups)."""
        if self._compiled.groups:
            return cast(list[str], self._compiled.findall(text))
        return [found.decode("utf-8") for found in self._compiled.findall(_utf8(text))]

    def sub(self, replacement: str | Callable[[LinearMatch], str], text: str) -> str:
        """``text`` with each match replaced."""
        encoded = _utf8(text)
        if isinstance(replacement, str):
            as_bytes: bytes | Callable[[Any], bytes] = replacement.encode("utf-8")
        else:
            as_bytes = lambda match: replacement(_BytesMatch(match, encoded)).encode("utf-8")  # noqa: E731
        return cast(bytes, self._compiled.sub(as_bytes, encoded)).decode("utf-8")


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
