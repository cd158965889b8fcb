"""The scanner contract (modelled on LLM Guard's): ``scan(text, context) -> ScanResult``.

A scanner looks at one text — an input message or the model's answer — and says how risky it is
(``score`` 0-1), whether that crosses its threshold (``verdict``), what it found (``details``) and,
if it can, the text with the findings replaced (``sanitized_text``). Scanners are built once from
config (patterns compiled then) and must be cheap and thread-safe: small inputs are scanned on the
event loop, large ones (and every input of a policy with an ``off_loop`` scanner) in a thread pool.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

Direction = Literal["input", "output"]
Verdict = Literal["pass", "fail"]


@dataclass(slots=True)
class ScanContext:
    """What a scanner may need beyond the text: where it runs and facts of the request."""

    direction: Direction
    model: str | None = None
    tenant: str | None = None
    role: str | None = None
    system_prompt: str | None = None
    response_format: dict[str, Any] | None = None
    # Per-token logprob entries of the answer (OpenAI chat shape), for confidence scoring.
    logprobs: list[dict[str, Any]] | None = None
    # Whether this is the end of the answer (a stream is also scanned in windows before it ends).
    final: bool = True
    # Reversible anonymisation: placeholder → original, shared by the input and output scans.
    vault: Vault | None = None
    # The request's time budget ends here (``time.perf_counter_ns``): a scanner that checks it may stop
    # early by raising ``ScanDeadline`` (None: no deadline, scan to the end).
    deadline_ns: int | None = None


class ScanDeadline(TimeoutError):
    """A scanner stopped because ``ScanContext.deadline_ns`` passed: the scan has no answer (treat it as the
    policy's time budget running out, never as a pass)."""


@dataclass(slots=True)
class ScanResult:
    """One scanner's answer about one text."""

    sanitized_text: str
    verdict: Verdict
    score: float
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def clean(cls, text: str) -> ScanResult:
        """Nothing found."""
        return cls(text, "pass", 0.0)


def verdict_for(score: float, threshold: float) -> Verdict:
    """``fail`` when ``score`` reaches ``threshold``."""
    return "fail" if score >= threshold else "pass"


class Scanner(Protocol):
    """One check. ``name`` is what the record and the error message call it."""

    name: str

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """Judge ``text``; never raise for odd input (the engine treats a crash as the scanner's bug)."""
        ...


class Vault:
    """Placeholders for values hidden from the model, per request, so they can be put back in its answer."""

    def __init__(self) -> None:
        self.originals: dict[str, str] = {}
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def placeholder(self, kind: str, value: str) -> str:
        """The placeholder for ``value`` (the same value gets the same placeholder)."""
        key = (kind, value)
        found = self._by_value.get(key)
        if found is not None:
            return found
        count = self._counts[kind] = self._counts.get(kind, 0) + 1
        token = f"<{kind.upper()}_{count}>"
        self._by_value[key] = token
        self.originals[token] = value
        return token

    def __bool__(self) -> bool:
        return bool(self.originals)


_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


class BoundedLru(Generic[_Key, _Value]):
    """A bounded, thread-safe least-recently-used map (the guard's scanners run in a thread pool)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[_Key, _Value] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _Key) -> _Value | None:
        """The stored value (now the most recently used), or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: _Key, value: _Value) -> None:
        """Store ``value``, dropping the least recently used entry past ``size`` (size 0: store nothing)."""
        if self.size <= 0:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)


class TextCache(BoundedLru[bytes, _Value]):
    """What a scanner found in a text it has read before, keyed by the text's digest (never the text).

    A chat re-sends its whole history every turn, so most of a long conversation's messages were
    scanned one request ago. Bounded (least recently used out) and thread-safe.
    """

    def __init__(self, size: int = 4096) -> None:
        super().__init__(size)

    @staticmethod
    def key(text: str, *salt: object) -> bytes:
        """The digest of ``text`` and whatever else the answer depends on (``salt``, e.g. the role).

        The last text's hash state is kept (compared by identity): the scanners of a request read the
        same text one after another, and each would otherwise hash all of it again (~40 us per 32 KB).
        """
        global _last_hashed
        last = _last_hashed  # one read: another thread may replace it
        if last is not None and last[0] is text:
            digest = last[1].copy()
        else:
            hashed = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
            _last_hashed = (text, hashed)
            digest = hashed.copy()
        digest.update(repr(salt).encode())
        return digest.digest()


# The last text hashed by ``TextCache.key`` and its hash state: a tuple replaced whole, so safe across threads
# (a miss hashes again; ``copy`` leaves the kept state as it was).
_last_hashed: tuple[str, hashlib.blake2b] | None = None
