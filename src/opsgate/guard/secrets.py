"""Secrets: API keys, tokens and private keys, by detect-secrets' maintained patterns.

detect-secrets is built to scan files line by line; we take the compiled patterns of its
regex-based plugins (AWS, GitHub, GitLab, Slack, Stripe, OpenAI, JWT, private keys, …) once at
start and run them over the text, which keeps their upkeep upstream without its per-line
machinery. Its entropy plugins are left out: on prose they flag every long word-like token. One
pattern of ours adds credentials written out in prose (``password: hunter2!``).

Every pattern runs on RE2 (linear time): the few of detect-secrets' that look around are rewritten
at load (a lookbehind for a non-word character becomes that character, a negative lookahead for a
word character becomes a non-word character or the end, and the span is trimmed back), and the
patterns run once per merged window of text around long tokens, so a text of dense tokens costs
one pass per pattern, not one per token; an RE2 set says first which patterns match in a window.
"""

from __future__ import annotations

import bisect
import importlib
import inspect
import pkgutil
import re
import time
from collections.abc import Iterable
from functools import cache
from typing import cast

import numpy as np

from opsgate.domain.guard_config import SecretsScannerConfig
from opsgate.guard.base import ScanContext, ScanDeadline, ScanResult, TextCache
from opsgate.guard.linear_re import LinearPattern, LinearSet, compile_linear
from opsgate.guard.pii_base import char_codes

_SKIPPED = {"IPPublicDetector"}  # IP addresses are the PII scanner's business
_ASSIGNED = compile_linear(
    r"\b(?:password|passwd|pwd|passphrase|api[_ -]?key|secret[_ -]?key|access[_ -]?token|auth[_ -]?token"
    r"|client[_ -]?secret)\b\s*(?:is|=|:|was)\s*[\"'`]?(?P<value>[^\s\"'`]{6,})",
    ignore_case=True,
)
_ASSIGNED_WORDS = ("pass", "pwd", "key", "token", "secret")
# Code that fetches a secret is not one: os.environ["KEY"], getenv(…), ${VAR}, settings.api_key, <your-key>.
_CODE_REFERENCE = re.compile(r"[^\s]*[(\[]|[${<%]|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
# Every detect-secrets pattern needs a long unbroken token (or a PEM header); the patterns run only in
# windows around those, because running ~45 patterns over a whole 1 KB prose text costs ~1 ms.
_ANCHOR = re.compile(r"(?<!\S)\S{16,}|-----BEGIN")
_LOOK_BEHIND = 48  # keyword-style patterns (cloudant_password = "…") start before the token
_LOOK_AHEAD = 40  # and a PEM header goes on after "-----BEGIN"
_PEM_END = re.compile(r"-----END [A-Z ]*PRIVATE KEY-----|-----END [A-Z ]+-----")
_TOKEN_STOP = re.compile(r"[\s\"'`,;)\]}>]")  # where a token-like secret ends
_DEADLINE_EVERY = 64  # windows or matches between two looks at the clock
_SLICE = 131_072  # characters of text searched for anchors between two looks at the clock
_SPACE = re.compile(r"\s")
_CACHED_TEXTS = 1024  # texts whose spans are kept (``SecretsScanner.scan``)
_CACHED_SPANS = 256  # spans of one text at most, for it to be kept


# detect-secrets' lookarounds, as RE2 can run them (the extra character is trimmed off the match).
_LINEAR_FORMS = (
    ("(?:(?<=\\W)|(?<=^))", "(?:^|\\W)"),
    ("(?!\\w)", "(?:\\W|$)"),
    ("{50,1024}", "{50,1000}"),  # RE2's repetition limit; a 1,000-character GitLab agent token is still found
)
_NOT_FOLLOWED_BY = re.compile(r"\(\?!\[([^\]^]+)\]\)")  # (?![a-f0-9]) → (?:[^a-f0-9]|$)


def linear_form(pattern: re.Pattern[str]) -> LinearPattern:
    """``pattern`` on RE2, its lookarounds rewritten (``ValueError`` if one is left that RE2 cannot run)."""
    source = pattern.pattern
    for python_form, re2_form in _LINEAR_FORMS:
        source = source.replace(python_form, re2_form)
    source = _NOT_FOLLOWED_BY.sub(r"(?:[^\1]|$)", source)
    return compile_linear(source, ignore_case=bool(pattern.flags & re.I), multiline=bool(pattern.flags & re.M))


def _trimmed(window: str, start: int, end: int) -> tuple[int, int]:
    """A match's span less the characters the rewritten lookarounds consumed."""
    if start < end and not (window[start].isalnum() or window[start] in "_[\"'"):
        start += 1
    if start < end and not (window[end - 1].isalnum() or window[end - 1] in "_-=/+\"'"):
        end -= 1
    return start, end


def _windows(text: str, deadline_ns: int | None = None) -> list[tuple[int, int]]:
    """The stretches around long tokens where a secret can be, overlapping ones merged.

    Read in slices of ``_SLICE`` characters ended at white space (no token or header spans two), the
    deadline looked at between them (``_anchors``: ~5 ns a character by numpy, ~25-60 by ``re``).
    """
    merged: list[tuple[int, int]] = []
    start = 0
    while start < len(text):
        space = _SPACE.search(text, start + _SLICE)
        end = space.start() if space else len(text)
        for anchor_start, anchor_end in _anchors(text, start, end):
            low, high = max(0, anchor_start - _LOOK_BEHIND), anchor_end + _LOOK_AHEAD
            if merged and low <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        if deadline_ns is not None:
            _check(deadline_ns)
        start = end
    return merged


# re's ``\s`` (``str.isspace``) for each ASCII code, and the code points above 127 it matches.
_ASCII_SPACE = np.array([chr(code).isspace() for code in range(128)], dtype=bool)
_WIDE_SPACES = np.array([code for code in range(128, 0x3001) if chr(code).isspace()], dtype=np.uint32)
_PEM_START = "-----BEGIN"
# Below this many characters ``_ANCHOR`` costs less than numpy's fixed cost per call.
_NUMPY_FROM = 4096


def _anchors(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The spans ``_ANCHOR.finditer(text, start, end)`` finds (``start`` is 0 or at white space).

    ``re`` tries the pattern at every position (~25 ns a character, ~0.8 ms per 32 KB); numpy finds the
    same spans from the character codes the PII scanner reads too (``char_codes``): every run of 16 or more
    non-space characters whole (the first alternative matches at a run's start and takes all of it), and
    each "-----BEGIN" outside those runs (the second alternative, where the first cannot start).
    """
    if end - start < _NUMPY_FROM:
        return [anchor.span() for anchor in _ANCHOR.finditer(text, start, end)]
    codes = char_codes(text)[start:end]
    space = _ASCII_SPACE[np.minimum(codes, 127)]
    high = codes > 127
    if high.any():
        space[high] = np.isin(codes[high], _WIDE_SPACES)
    edges = np.zeros(len(codes) + 2, dtype=bool)
    edges[1:-1] = ~space
    bounds = np.flatnonzero(edges[1:] != edges[:-1])
    run_starts, run_ends = bounds[::2], bounds[1::2]
    long_runs = run_ends - run_starts >= 16
    found = list(zip((run_starts[long_runs] + start).tolist(), (run_ends[long_runs] + start).tolist(), strict=True))
    at = text.find(_PEM_START, start, end)
    if at < 0:
        return found
    headers: list[tuple[int, int]] = []
    while at >= 0:
        headers.append((at, at + len(_PEM_START)))
        at = text.find(_PEM_START, at + len(_PEM_START), end)
    # A header inside a long run is part of that run's match.
    run_firsts = [low for low, _ in found]
    outside = []
    for header in headers:
        index = bisect.bisect_right(run_firsts, header[0]) - 1
        if index < 0 or found[index][1] <= header[0]:
            outside.append(header)
    return sorted(found + outside)


@cache
def detect_secrets_patterns() -> tuple[tuple[str, LinearPattern], ...]:
    """(secret type, linear-time pattern) for every regex plugin detect-secrets ships (loaded once)."""
    import detect_secrets.plugins as plugins
    from detect_secrets.plugins.base import RegexBasedDetector

    found: dict[str, tuple[str, list[re.Pattern[str]]]] = {}
    for module_info in pkgutil.iter_modules(plugins.__path__):
        module = importlib.import_module(f"detect_secrets.plugins.{module_info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, RegexBasedDetector) and cls is not RegexBasedDetector and name not in _SKIPPED:
                found[name] = (str(cls.secret_type), list(cast(Iterable[re.Pattern[str]], cls.denylist)))
    return tuple((kind, linear_form(pattern)) for _, (kind, patterns) in sorted(found.items()) for pattern in patterns)


@cache
def _pattern_set() -> LinearSet:
    """All of ``detect_secrets_patterns`` in one RE2 set (built once)."""
    return LinearSet([pattern for _, pattern in detect_secrets_patterns()])


def _looks_secret(value: str) -> bool:
    """A digit, a symbol or mixed case: "hunter2!" is a password, "incorrect" in "the password is incorrect" is not."""
    value = value.rstrip(".,;:!?")
    if len(value) < 6 or _CODE_REFERENCE.match(value):
        return False
    return any(not c.isalpha() for c in value) or (value.lower() != value and value.upper() != value)


class _Extents:
    """Where a found secret really ends: a PEM block at its END line, a token at its last character.

    Each answer is the first stop (white space or closing punctuation; an END line) at or after a
    position. The last search is remembered: the same stop answers every later position up to it, so
    thousands of matches inside one long token (``AKIA…AKIA…`` with no space) cost one search, not one
    walk to the token's end each (quadratic before).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        # pem? → (searched from, the stop's start, the answer): every position from the first to the second
        # has the same answer.
        self._last: dict[bool, tuple[int, int, int]] = {}

    def end(self, end: int, kind: str) -> int:
        """The end of the secret whose match ends at ``end``."""
        pem = kind == "Private Key"
        last = self._last.get(pem)
        if last is not None and last[0] <= end <= last[1]:
            return last[2]
        size = len(self.text)
        if pem:
            closing = _PEM_END.search(self.text, end)
            self._last[pem] = (end, closing.start(), closing.end()) if closing else (end, size, size)
        else:
            stop = _TOKEN_STOP.search(self.text, end)
            self._last[pem] = (end, stop.start(), stop.start()) if stop else (end, size, size)
        return self._last[pem][2]


def _check(deadline_ns: int) -> None:
    """Raise ``ScanDeadline`` once ``deadline_ns`` (``time.perf_counter_ns``) has passed."""
    if time.perf_counter_ns() > deadline_ns:
        raise ScanDeadline("secrets scan past the request's time budget")


class SecretsScanner:
    """Flags secrets; redacts each as ``<SECRET>``."""

    name = "secrets"

    def __init__(self, config: SecretsScannerConfig) -> None:
        self.patterns = detect_secrets_patterns()
        self.pattern_set = _pattern_set()
        self.threshold = config.threshold
        # A chat re-sends its whole history every turn: the spans found in a text read before cost a digest
        # (the other scanners keep theirs so too). Bounded in texts and in spans per text.
        self._seen: TextCache[tuple[tuple[int, int, str], ...]] = TextCache(_CACHED_TEXTS)

    def spans(self, text: str, deadline_ns: int | None = None) -> list[tuple[int, int, str]]:
        """(start, end, secret type) of every secret, merged where they overlap.

        ``deadline_ns`` (``time.perf_counter_ns``): past it, raise ``ScanDeadline`` (looked at every
        ``_DEADLINE_EVERY`` windows or matches), so a scan past the request's budget gives its thread back.
        """
        spans: list[tuple[int, int, str]] = []
        lowered = text.lower()
        if any(word in lowered for word in _ASSIGNED_WORDS):
            for match in _ASSIGNED.finditer(text):
                if _looks_secret(match.group(1) or ""):
                    spans.append((match.start(1), match.end(1), "Password"))
        extents = _Extents(text)
        steps = 0
        for low, high in _windows(text, deadline_ns):
            window = text[low:high]
            # One pass of all the patterns says which can match; only those are run for their spans.
            for index in sorted(self.pattern_set.matching(window)):
                kind, pattern = self.patterns[index]
                for match in pattern.finditer(window):
                    steps += 1
                    if deadline_ns is not None and not steps % _DEADLINE_EVERY:
                        _check(deadline_ns)
                    start, end = _trimmed(window, match.start(), match.end())
                    if end > start:
                        spans.append((low + start, extents.end(low + end, kind), kind))
            steps += 1
            if deadline_ns is not None and not steps % _DEADLINE_EVERY:
                _check(deadline_ns)
        spans.sort()
        merged: list[tuple[int, int, str]] = []
        for start, end, kind in spans:
            if merged and start < merged[-1][1]:
                last = merged[-1]
                merged[-1] = (last[0], max(last[1], end), last[2])
            else:
                merged.append((start, end, kind))
        return merged

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """Score 1 when a secret is found; details list the secret types (never the values)."""
        key = TextCache.key(text)
        spans = self._seen.get(key)
        if spans is None:
            # Past the request's deadline this raises ScanDeadline: no answer, and nothing cached.
            spans = tuple(self.spans(text, context.deadline_ns))
            if len(spans) <= _CACHED_SPANS:
                self._seen.put(key, spans)
        if not spans:
            return ScanResult.clean(text)
        out: list[str] = []
        last = 0
        for start, end, _ in spans:
            out.append(text[last:start])
            out.append("<SECRET>")
            last = end
        out.append(text[last:])
        kinds = sorted({kind for _, _, kind in spans})
        return ScanResult("".join(out), "fail", 1.0, {"types": kinds})
