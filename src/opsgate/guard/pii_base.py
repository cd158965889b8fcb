"""What every PII recogniser returns: a kind and a span of the scanned text."""

from __future__ import annotations

import bisect
import functools
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from opsgate.domain.guard_config import PiiEntity
from opsgate.guard.linear_re import LinearPattern, LinearSet


class Finding(NamedTuple):
    """One confirmed piece of personal data: its kind and where it is.

    A named tuple, not a frozen dataclass: a dense 32 KB text makes ~2,000 of them per scan, and a
    frozen dataclass's constructor costs three times as much.
    """

    kind: PiiEntity
    start: int
    end: int
    value: str


def resolve_overlaps(ranked: list[list[Finding]]) -> list[Finding]:
    """Findings of several recognisers, in text order, none overlapping.

    ``ranked`` lists each recogniser's findings, most trusted first: a finding that overlaps one
    already taken is dropped (a validated card number beats the model's guess of a name there).
    """
    # Taken findings never overlap, so sorted by start they are sorted by end too: a new finding can
    # only overlap its neighbours in that order (n log n; comparing with every taken one was quadratic).
    starts: list[int] = []
    taken: list[Finding] = []
    for findings in ranked:
        for finding in findings:
            at = bisect.bisect_right(starts, finding.start)
            if at and taken[at - 1].end > finding.start:
                continue
            if at < len(taken) and taken[at].start < finding.end:
                continue
            starts.insert(at, finding.start)
            taken.insert(at, finding)
    return taken


_SENTENCE_DOT = re.compile(r"(?<=[^\W\d_]{5})\.$")


# What looks like a name in code and technical prose: dotted paths ("sys.version_info"), code
# punctuation, one CamelCase word ("KeyError", "sNaN"; not "McDonald", nor "Müller GmbH"), all-caps words.
_CODE_LIKE = re.compile(
    r"[a-z]{2}\.[a-z]|[()\[\]{}=_/\\<>@]|^(?!Mc|Mac|De|La|Le|Di)[^\s]{0,40}[a-z][A-Z][^\s]{0,40}$|^[A-Z]{4,}$"
)
_PARTICLES = frozenset({"de", "da", "do", "dos", "das", "del", "della", "di", "du", "van", "von", "der", "le", "la"})


def looks_like_code(value: str) -> bool:
    """Whether a would-be name is an identifier, a path or lowercase prose rather than a name."""
    first = value.split(maxsplit=1)[0] if value.strip() else ""
    lowercase_start = not value[:1].isupper() and first.lower() not in _PARTICLES
    return lowercase_start or _CODE_LIKE.search(value) is not None


def trim(value: str) -> str:
    """``value`` without trailing separators, nor a sentence's full stop ("Paris." but not "Str.")."""
    value = value.rstrip(" ,;:")
    # One match at most, ending the text or before its final newline ($): searched from there only.
    dot = _SENTENCE_DOT.search(value, max(0, len(value) - 2))
    return value if dot is None else value[: dot.start()] + value[dot.end() :]


def by_first_character(alternatives: list[tuple[str, str]]) -> str:
    """``"|".join(pattern for _, pattern in alternatives)`` with the alternatives grouped under their first
    character: ``(first, rest)`` pairs, ``first`` a pattern for one character (``"G"``, ``"[Ss]"``), the
    same string for the same characters and disjoint from the others.

    The same matches: the alternatives that can match at a place all begin with the character there, so
    they are one group, in their order. ``re`` tries every alternative of a flat list at each place (375
    street types, ~90 legal forms); grouped, it tries the groups' first characters, then one group.
    """
    groups: dict[str, list[str]] = {}
    for first, rest in alternatives:
        groups.setdefault(first, []).append(rest)
    return "|".join(f"{first}(?:{'|'.join(rests)})" for first, rests in groups.items())


# Python's ``\s`` on str (``str.isspace``), as a class RE2 reads: RE2's own ``\s`` is ASCII only.
WHITESPACE = "[" + "".join(f"\\x{{{code:x}}}" for code in range(sys.maxunicode + 1) if chr(code).isspace()) + "]"


def merge_windows(spans: Iterable[tuple[int, int]], before: int, after: int, size: int) -> list[tuple[int, int]]:
    """Spans (in text order) widened by ``before`` and ``after``, clipped to ``size``, overlapping ones merged."""
    out: list[tuple[int, int]] = []
    for start, end in spans:
        low, high = max(0, start - before), min(size, end + after)
        if out and low <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


class AnchorGroup:
    """Anchors whose chunks (``anchor_windows``) are found together: one RE2 set pass per chunk says which of them
    match there (~6 us; a search per pattern costs ~4 us each). The last text's chunks are kept, for the next
    pattern of the group. Thread-safe (a tuple replaced whole, compared by identity; a miss recomputes)."""

    def __init__(self, patterns: list[LinearPattern]) -> None:
        self._set = LinearSet(patterns)
        self._count = len(patterns)
        self._last: tuple[str, int, int, list[list[tuple[int, int]]] | None] | None = None

    def member(self, index: int) -> AnchorMember:
        """The pattern at ``index``, for ``anchor_windows``."""
        return AnchorMember(self, index)

    def chunks(self, text: str, longest: int, chunk: int) -> list[list[tuple[int, int]]] | None:
        """Per pattern, the (low, high) spans ``anchor_windows`` searches in which it matches; None: RE2 cannot
        encode the text (a lone surrogate)."""
        last = self._last  # one read: another thread may replace it
        if last is not None and last[0] is text and last[1:3] == (longest, chunk):
            return last[3]
        spans: list[list[tuple[int, int]]] = [[] for _ in range(self._count)]
        found: list[list[tuple[int, int]]] | None = spans
        try:
            for low in range(0, len(text), chunk):
                high = min(len(text), low + chunk + longest)
                for index in self._set.matching(text[low:high]):
                    spans[index].append((low, high))
        except UnicodeEncodeError:
            found = None
        self._last = (text, longest, chunk, found)
        return found


class AnchorMember(NamedTuple):
    """One pattern of an ``AnchorGroup``."""

    group: AnchorGroup
    position: int


def anchor_windows(
    anchor: LinearPattern | AnchorMember, text: str, before: int, after: int, longest: int = 64, chunk: int = 1024
) -> list[tuple[int, int]]:
    """Where a pattern can match: around each ``chunk`` of ``text`` holding a match of ``anchor``.

    For a pattern whose every match holds a match of ``anchor`` (a literal it requires; at most
    ``longest`` characters), starting at most ``before`` characters before that and ending (with its
    lookaheads) at most ``after`` after it: it finds the same matches in these windows as in the whole
    text (the lookbehinds and ``\\b`` of ``re`` see the text before a window). One RE2 search per chunk
    (a dense text has an anchor every sentence: listing them all costs ~4 us each in RE2's wrapper).
    A text RE2 cannot encode (a lone surrogate): one window. ``anchor`` of an ``AnchorGroup``: the chunks of all
    the group's patterns are found at once.
    """
    if isinstance(anchor, AnchorMember):
        found = anchor.group.chunks(text, longest, chunk)
        return [(0, len(text))] if found is None else merge_windows(found[anchor.position], before, after, len(text))
    spans: list[tuple[int, int]] = []
    try:
        for low in range(0, len(text), chunk):
            high = min(len(text), low + chunk + longest)  # an anchor starting in the chunk ends by here
            if anchor.search(text[low:high]) is not None:
                spans.append((low, high))
    except UnicodeEncodeError:
        return [(0, len(text))]
    return merge_windows(spans, before, after, len(text))


def matches_at(
    match: Callable[[str, int, int], re.Match[str] | None], text: str, starts: Iterable[int], low: int, high: int
) -> Iterator[re.Match[str]]:
    """What ``finditer(text, low, high)`` of ``match``'s pattern finds, given ascending ``starts`` that hold
    every place a match can begin: tried only there, skipping those inside the last match."""
    resume = low
    for at in starts:
        if at < resume:
            continue
        found = match(text, at, high)
        if found is not None:
            yield found
            resume = found.end()


def finditer_in(pattern: re.Pattern[str], text: str, windows: list[tuple[int, int]]) -> Iterator[re.Match[str]]:
    """``pattern.finditer`` over each window of ``text``, in order."""
    for low, high in windows:
        yield from pattern.finditer(text, low, high)


# The last text's character codes and ``\d`` mask: one scan reads them four times (identifier, address and
# date windows, the name recogniser's tokens). A tuple replaced whole, compared by identity: safe across threads
# (a miss recomputes).
_last_digits: tuple[str, NDArray[np.integer], NDArray[np.bool_]] | None = None


def char_codes(text: str) -> NDArray[np.integer]:
    """``text``'s character codes (uint8 for an ASCII text, else uint32; a lone surrogate is one code), read
    once per text: the last text's are kept with its digit mask."""
    return _digit_mask(text)[0]


def digit_mask(text: str) -> tuple[NDArray[np.integer], NDArray[np.bool_]]:
    """``text``'s character codes (``char_codes``) and where ``re``'s ``\\d`` matches, read once per text."""
    return _digit_mask(text)


def _digit_mask(text: str) -> tuple[NDArray[np.integer], NDArray[np.bool_]]:
    """``text``'s character codes and where ``re``'s ``\\d`` matches (a Unicode decimal digit, ``str.isdecimal``)."""
    global _last_digits
    last = _last_digits  # one read: another thread may replace it
    if last is not None and last[0] is text:
        return last[1], last[2]
    if text.isascii():
        codes: NDArray[np.integer] = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    else:
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    mask = (codes >= 48) & (codes <= 57)
    if codes.dtype != np.uint8:
        high = np.unique(codes[codes >= 128]).tolist()
        decimal = [code for code in high if chr(code).isdecimal()]
        if decimal:
            mask |= np.isin(codes, decimal)
    _last_digits = (text, codes, mask)
    return codes, mask


# Below this many characters, ``re`` finds the runs in less time than numpy's fixed cost per call (~5-10 us).
SHORT = 2048
_DIGIT_RUNS = re.compile(r"\d+")


@functools.cache
def _digit_runs_pattern(also: str) -> re.Pattern[str]:
    return re.compile(rf"[\d{re.escape(also)}]+")


def digit_runs(text: str, also: str = "") -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(starts, ends) of the runs of ``[\\d{also}]+`` in ``text`` (``also``: ASCII characters), in order: what
    ``re.finditer`` finds, from numpy passes over the character codes.

    ``re`` tries its pattern at every position (~1 ms per 32 KB even for ``\\d+``); this costs ~0.03 ms.
    ``\\d`` is ``re``'s: a Unicode decimal digit (``str.isdecimal``), so the non-ASCII code points of a text
    are asked, once each. A lone surrogate is one code point, as in the ``str``.
    """
    if len(text) < SHORT:
        spans = [m.span() for m in (_DIGIT_RUNS if not also else _digit_runs_pattern(also)).finditer(text)]
        found = np.array(spans, dtype=np.intp).reshape(-1, 2)
        return found[:, 0], found[:, 1]
    codes, digits = _digit_mask(text)
    mask = np.zeros(len(codes) + 2, dtype=bool)
    inner = mask[1:-1]
    inner[:] = digits
    for char in also:
        inner |= codes == ord(char)
    edges = np.flatnonzero(mask[1:] != mask[:-1])
    return edges[::2], edges[1::2]


def clusters(starts: NDArray[np.intp], ends: NDArray[np.intp], gap: int) -> list[tuple[int, int]]:
    """Runs (``digit_runs``) no more than ``gap`` characters apart, joined: what ``re.finditer`` of
    ``R(?:[^…]{0,gap}R)*`` finds (``R`` the runs' pattern and ``[^…]`` its complement), as (start, end)."""
    if starts.size < 16:  # a few runs: a Python step each costs less than numpy's fixed cost
        out: list[tuple[int, int]] = []
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            if out and start - out[-1][1] <= gap:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
        return out
    breaks = np.flatnonzero(starts[1:] - ends[:-1] > gap)
    first = starts[np.concatenate(([0], breaks + 1))]
    last = ends[np.concatenate((breaks, [ends.size - 1]))]
    return list(zip(first.tolist(), last.tolist(), strict=True))


# Character codes above this are one bucket in ``Literals``' tables (a superset: every place is checked by
# ``str.startswith`` after).
_TOP = 128
_SIDE = _TOP + 1


class Literals:
    """Every occurrence of some strings in a text, overlapping ones included: what a ``str.find`` loop per
    string finds, for a fixed cost per text (~0.2 ms per 32 KB) instead of one pass over the text per string
    (~15 us each: ~50 strings cost ~0.8 ms a text).

    numpy reads the codes of each place and the two after it (codes above 127 as one value) in tables of the
    strings' first two and three characters; ``str.startswith`` checks the few places left. Built once,
    read-only, thread-safe.
    """

    def __init__(self, strings: Iterable[str]) -> None:
        self.strings = tuple(dict.fromkeys(strings))
        assert self.strings and all(self.strings), "no empty string"
        pairs = np.zeros((_SIDE, _SIDE), dtype=bool)
        triples = np.zeros((_SIDE, _SIDE, _SIDE), dtype=bool)
        by_prefix: dict[str, list[str]] = {}
        for string in self.strings:
            codes = [min(ord(char), _TOP) for char in string[:3]]
            # A string shorter than three characters takes every code after it.
            pairs[codes[0], codes[1] if len(codes) > 1 else slice(None)] = True
            triples[tuple(codes) + (slice(None),) * (3 - len(codes))] = True
            by_prefix.setdefault(string[:3], []).append(string)
        self._pairs = pairs.reshape(-1)
        self._triples = np.packbits(triples.reshape(-1))  # a bit each: ~270 KB, not 2.1 MB
        self._by_prefix = {prefix: tuple(strings) for prefix, strings in by_prefix.items()}
        self._prefix_lengths = sorted({len(prefix) for prefix in by_prefix})
        # The strings that may start at a place, by the place's key (its first three codes, as ``find`` reads
        # them): filled as keys are met (a dict item set at once: safe across threads).
        self._by_key: dict[int, tuple[str, ...]] = {}

    def find(self, text: str) -> list[tuple[int, str]]:
        """(where, string) of every occurrence of every string in ``text``, by place."""
        codes = char_codes(text)
        size = len(codes)
        if not size:
            return []
        clipped = np.zeros(size + 2, dtype=np.uint16)  # and two past the end (every place is checked after)
        clipped[:size] = codes if codes.dtype == np.uint8 else np.minimum(codes, _TOP)
        pair_keys = clipped[:size] * _SIDE + clipped[1 : size + 1]
        places = np.flatnonzero(self._pairs[pair_keys])
        keys = pair_keys[places].astype(np.intp) * _SIDE + clipped[places + 2]
        kept = (self._triples[keys >> 3] >> (7 - (keys & 7)).astype(np.uint8)) & 1 == 1
        found: list[tuple[int, str]] = []
        by_key, starts_with = self._by_key, text.startswith
        for at, key in zip(places[kept].tolist(), keys[kept].tolist(), strict=True):
            candidates = by_key.get(key)
            if candidates is None:
                candidates = by_key[key] = self._candidates(key)
            for string in candidates:
                if starts_with(string, at):
                    found.append((at, string))
        return found

    def _candidates(self, key: int) -> tuple[str, ...]:
        """The strings that may start at a place whose first three codes (above 127 as 128, past the end 0) make
        ``key``, in the order a search by prefix finds them: by prefix length (1, 2, then 3 characters), then as
        given. The text decides which of them are there (``str.startswith``): a string that starts at a place has
        that place's prefix, so only the strings of the place's own prefixes pass, in that order."""
        codes = (key // (_SIDE * _SIDE), key // _SIDE % _SIDE, key % _SIDE)
        fits = [
            (min(len(string), 3), order, string)
            for order, string in enumerate(self.strings)
            if all(min(ord(char), _TOP) == code for char, code in zip(string[:3], codes, strict=False))
        ]
        return tuple(string for *_, string in sorted(fits))
