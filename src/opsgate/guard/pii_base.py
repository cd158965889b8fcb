"""What every PII recogniser returns: a kind and a span of the scanned text."""

from __future__ import annotations

import bisect
import re
from typing import NamedTuple

from opsgate.domain.guard_config import PiiEntity


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
    return _SENTENCE_DOT.sub("", value.rstrip(" ,;:"))
