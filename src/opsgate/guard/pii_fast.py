"""Names, places and organisations by a small linear model over capitalised words: linear time, numpy only.

Every capitalised word (a fixed set of function words aside) is a candidate. Its features
are the word, its suffixes and shape, which gazetteers it is in (first names, surnames, cities,
countries, regions, company words, street words, titles — from Faker's providers in all its
locales, MIT — and "a common lowercase word" from prose), and the two words on each side with their
gazetteer bits. A multinomial logistic regression (``training/ner_train.py``; weights and
gazetteer in ``data/ner_fast.npz``) labels each candidate O, PER, LOC, ORG or ADDR (part of a street
address: left to the address patterns). Adjacent words of one label, joined by a space, a hyphen or
a connector that kind allows ("van", "de", "&", "and"), make one finding.

Cost: one regex pass that cuts the text into tokens, then ~30 feature look-ups per capitalised word
(a word's own features, and a context word's, are looked up once per text) and one numpy gather for
the whole text: ~0.2 ms per KB of prose, ~1 ms per KB of text dense with names, on one loaded core.
Nothing is tried more than once per token and nothing is kept between calls: linear in the input by
construction, and thread-safe.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate, repeat
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from opsgate.domain.guard_config import PiiEntity
from opsgate.guard.pii_base import Finding, looks_like_code

MODEL_PATH = Path(__file__).parent / "data" / "ner_fast.npz"
LABELS = ("O", "PER", "LOC", "ORG", "ADDR")
_KIND: dict[int, PiiEntity] = {1: "person", 2: "location", 3: "organization"}
# Gazetteer bits (``training/ner_gazetteer.py`` writes them).
GAZ_BITS = ("first", "last", "city", "country", "region", "orgword", "street", "title", "common")


# Tokens: leading whitespace, then a word (inner apostrophes, hyphens, "&") or one other character. They
# cover the text without gaps, so each token's offset is the running sum of the lengths before it.
_TOKEN = re.compile(r"\s*(?:[\w'\u2019&-]+|[^\w\s])")
# A capitalised word glued to one of these is part of a path, an address or a dotted name.
_GLUE = frozenset({".", "@", "/", "\\", "-", "'", "\u2019", ":", "#", "$", "%", "=", "<"})
_POSSESSIVE = ("'s", "\u2019s", "'", "\u2019")
# Lowercase words that may sit inside one name, by kind: "Ludwig van Beethoven", "Rio de Janeiro",
# "Marks and Spencer", "Bank of America".
_CONNECT: dict[int, frozenset[str]] = {
    1: frozenset({"van", "von", "de", "der", "den", "del", "della", "di", "da", "do", "dos", "das", "du", "la",
                  "le", "y", "e", "bin", "ibn", "al", "ter", "ten", "zu", "af", "-"}),
    2: frozenset({"de", "del", "la", "le", "les", "des", "di", "da", "do", "dos", "das", "am", "an", "im", "upon",
                  "on", "sur", "en", "-", "of", "the"}),
    3: frozenset({"and", "&", "of", "de", "y", "e", "und", "et", "for", "the", "-", ",", "i", "och", "en", "og"}),
}  # fmt: skip
_SENTENCE_START = frozenset({"", ".", "!", "?", "<nl>", ":", ";", '"', "(", "-", "*", "•"})
# Function words that open sentences: never a name on their own, not worth classifying.
_STOP_WORDS = (
    "the a an this that these those it its i we you he she they if when what why how where which who whom "
    "and or but so for in on at to of by with from as is are be was were do does did can could would should "
    "please thanks thank yes no not my our your his her their there here then also all any each every some "
    "one after before because while since until about note see use returns return set get let make "
    "hi hello hey dear ok okay"
)
_STOP = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True, slots=True)
class Candidate:
    """A capitalised word and its features."""

    start: int
    end: int
    features: list[str]


Word = tuple[int, int, str, str, int, str, str, str, str]  # start, end, word, lower, bits, p2, p1, n1, n2


def _shape(word: str) -> str:
    if word.isupper():
        return "XX" if len(word) > 1 else "X"
    shape = "Xx"
    if "-" in word:
        shape += "-"
    if "'" in word or "\u2019" in word:
        shape += "'"
    if any(map(str.isdigit, word)):
        shape += "d"
    if "-" not in word and any(map(str.isupper, word[1:])):
        shape += "C"  # McDonald, DeMarco, iOS-like
    return shape


class FastNames:
    """The shipped model: feature vocabulary, weights and gazetteer; built once, read-only, thread-safe."""

    def __init__(self, vocabulary: dict[str, int], weights: NDArray[np.float32], gazetteer: dict[str, int]) -> None:
        self.vocabulary = vocabulary
        # (features + 2, labels): the bias row, then a row of zeros that unknown features look up (so a
        # look-up needs no test for "unknown").
        self.bias_row = len(weights) - 1
        self.unknown_row = len(weights)
        self.weights = np.vstack([weights, np.zeros((1, weights.shape[1]), dtype=weights.dtype)])
        self.gazetteer = gazetteer
        # (gazetteer bits, position) -> feature ids: a few hundred keys at most. Filled lazily; a
        # race between threads writes the same value twice.
        self._position_ids: dict[tuple[int, str], list[int]] = {}

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> FastNames:
        """The model in ``path`` (the layout ``training/ner_train.py`` writes)."""
        with np.load(path, allow_pickle=False) as data:
            names = bytes(data["vocabulary"]).decode("utf-8").split("\n")
            weights = data["weights"].astype(np.float32)
            words = bytes(data["gazetteer_words"]).decode("utf-8").split("\n")
            bits = data["gazetteer_bits"].tolist()
        vocabulary = {sys.intern(name): index for index, name in enumerate(names)}
        return cls(vocabulary, weights, dict(zip(words, bits, strict=True)))

    def words(self, text: str) -> Iterator[Word]:
        """Each capitalised word worth classifying, with the two words on each side."""
        tokens = _TOKEN.findall(text)
        ends = list(accumulate(map(len, tokens)))
        words = list(map(str.lstrip, tokens))
        count = len(words)
        gaz = self.gazetteer.get
        for index in [i for i, w in enumerate(words) if w[0].isupper()]:
            word = words[index]
            token = tokens[index]
            if len(token) == len(word) and index and words[index - 1] in _GLUE:
                continue
            end = ends[index]
            start = end - len(word)
            if word.endswith(_POSSESSIVE) and len(word) > 2:
                cut = 1 if word[-1] in "'\u2019" else 2
                word, end = word[:-cut], end - cut
            lower = word.lower()
            bits = gaz(lower, 0)
            if lower in _STOP and not bits & 0b11:
                continue
            if "\n" in token:
                p1, p2 = "<nl>", (words[index - 1] if index else "")
            else:
                p1 = words[index - 1] if index else ""
                p2 = words[index - 2] if index > 1 else ""
            if index + 1 < count and "\n" in tokens[index + 1]:
                n1, n2 = "<nl>", words[index + 1]
            else:
                n1 = words[index + 1] if index + 1 < count else ""
                n2 = words[index + 2] if index + 2 < count else ""
            yield start, end, word, lower, bits, p2, p1, n1, n2

    def candidates(self, text: str) -> Iterator[Candidate]:
        """Each capitalised word of ``text`` worth classifying, with its features (training and tests)."""
        for start, end, word, lower, bits, p2, p1, n1, n2 in self.words(text):
            features = self._word_part(word, lower, bits) + _position_part(bits, _position(p1, n1))
            features += self._side_part("p", p1) + self._side_part("n", n1) + _pairs(p2, p1, n1, n2)
            yield Candidate(start, end, features)

    def _word_part(self, word: str, lower: str, bits: int) -> list[str]:
        out = [
            "w=" + lower,
            "s4=" + lower[-4:],
            "s3=" + lower[-3:],
            "s2=" + lower[-2:],
            "pre3=" + lower[:3],
            "shape=" + _shape(word),
            "len=" + str(min(len(word), 12)),
        ]
        out += _G[bits]
        if "-" in word:
            # "Munoz-Green": both parts surnames is a firm in some locales, a double-barrelled person in others.
            both = -1
            for part in lower.split("-"):
                both &= self.gazetteer.get(part, 0)
            out += _HY[both & 511]
        return out

    def _side_part(self, side: str, word: str) -> list[str]:
        """Features of the word just before (``p``) or after (``n``): itself, its shape and gazetteer bits."""
        if not word[:1].isupper():
            return [f"{side}1={word.lower()}", f"{side}1s=-"]
        bits = self.gazetteer.get(word.lower(), 0)
        out = [f"{side}1={word.lower()}", f"{side}1s={_shape(word)}"]
        return out + (_PG if side == "p" else _NG)[bits]

    def scores(self, text: str) -> tuple[list[tuple[int, int, int]], NDArray[np.float32]]:
        """(start, end, gazetteer bits) of each candidate and its logits over ``LABELS``.

        The features of a word, of a context word and of a (bits, position) pair are looked up once
        per text (names and function words repeat), then one numpy gather sums every candidate's rows.
        """
        vocab = self.vocabulary.get
        bias, unknown = self.bias_row, repeat(self.unknown_row)
        word_ids: dict[str, list[int]] = {}
        before_ids: dict[str, list[int]] = {}
        after_ids: dict[str, list[int]] = {}
        positions = self._position_ids
        ids: list[int] = []
        starts: list[int] = []
        spans: list[tuple[int, int, int]] = []

        def lookup(features: list[str]) -> list[int]:
            return list(map(vocab, features, unknown))

        # The same features as ``candidates`` (test_pii_fast checks the logits agree), looked up by parts.
        for start, end, word, lower, bits, p2, p1, n1, n2 in self.words(text):
            starts.append(len(ids))
            spans.append((start, end, bits))
            ids.append(bias)  # every candidate has its bias row, so no segment of the gather is empty
            found = word_ids.get(word)
            if found is None:
                found = word_ids[word] = lookup(self._word_part(word, lower, bits))
            ids += found
            key = (bits, _position(p1, n1))
            found = positions.get(key)
            if found is None:
                found = positions[key] = lookup(_position_part(*key))
            ids += found
            found = before_ids.get(p1)
            if found is None:
                found = before_ids[p1] = lookup(self._side_part("p", p1))
            ids += found
            found = after_ids.get(n1)
            if found is None:
                found = after_ids[n1] = lookup(self._side_part("n", n1))
            ids += found
            ids += map(vocab, _pairs(p2, p1, n1, n2), unknown)
        if not spans:
            return [], np.zeros((0, len(LABELS)), dtype=np.float32)
        return spans, np.add.reduceat(self.weights[np.asarray(ids)], np.asarray(starts), axis=0)

    def find(self, text: str, kinds: frozenset[PiiEntity]) -> list[Finding]:
        """Findings of ``kinds``: runs of capitalised words of one label, joined by what that kind allows."""
        spans, logits = self.scores(text)
        if not spans:
            return []
        labels = logits.argmax(axis=1).tolist()
        # A first name the model left out of the surname right after it ("Thomas Carpenter" read as
        # O + PER: Faker's street names are built from first names too) joins the person.
        for index in range(len(spans) - 1):
            if (
                labels[index] in (0, 4)
                and labels[index + 1] == 1
                and spans[index][2] & 1
                and text[spans[index][1] : spans[index + 1][0]] == " "
            ):
                labels[index] = 1
        findings: list[Finding] = []
        run_start = run_end = -1
        run_label = 0
        for (start, end, _), label in zip(spans, labels, strict=True):
            if label == run_label and label in _KIND and _joinable(text[run_end:start], label):
                run_end = end
                continue
            _emit(text, run_label, run_start, run_end, kinds, findings)
            run_start, run_end, run_label = start, end, label
        _emit(text, run_label, run_start, run_end, kinds, findings)
        return findings


def _bit_features(prefix: str) -> list[list[str]]:
    """For every combination of gazetteer bits, its features: ``prefix + name`` for each bit set."""
    return [[prefix + name for index, name in enumerate(GAZ_BITS) if bits >> index & 1] for bits in range(512)]


_G, _PG, _NG, _HY = _bit_features("g="), _bit_features("pg="), _bit_features("ng="), _bit_features("hy=")


def _position(p1: str, n1: str) -> str:
    """Sentence start or not, capitalised word before or not, capitalised word after or not."""
    return (
        ("B" if p1 in _SENTENCE_START else "b")
        + ("P" if p1[:1].isupper() else "p")
        + ("N" if n1[:1].isupper() else "n")
    )


def _position_part(bits: int, position: str) -> list[str]:
    out = ["pos=" + position]
    if bits == 0:
        out.append("g=none" + position)
    out += ["g=" + name + position for index, name in enumerate(GAZ_BITS) if bits >> index & 1]
    return out


def _pairs(p2: str, p1: str, n1: str, n2: str) -> list[str]:
    p1, p2, n1, n2 = p1.lower(), p2.lower(), n1.lower(), n2.lower()
    return ["p2=" + p2, "n2=" + n2, "p2p1=" + p2 + "_" + p1, "n1n2=" + n1 + "_" + n2, "p1n1=" + p1 + "_" + n1]


def _joinable(gap: str, label: int) -> bool:
    """Whether the text between two words of one label keeps them in one name."""
    if gap in (" ", "-", "\u00a0"):
        return True
    if len(gap) > 12:
        return False
    words = gap.split()
    if not words:
        return False
    if gap.startswith(",") and label == 3:
        words = words[1:] or [","]
    return all(word in _CONNECT[label] for word in words)


def _emit(text: str, label: int, start: int, end: int, kinds: frozenset[PiiEntity], out: list[Finding]) -> None:
    kind = _KIND.get(label)
    if kind is None or kind not in kinds:
        return
    value = text[start:end]
    if len(value) < 2 or looks_like_code(value):
        return
    out.append(Finding(kind, start, end, value))


def load(path: Path | None = None) -> FastNames:
    """The shipped model (or ``path``'s), loaded once per process (~0.3 s) and shared by every scanner."""
    return _load(path or MODEL_PATH)


@functools.cache
def _load(path: Path) -> FastNames:
    return FastNames.load(path)


class FastNameRecognizer:
    """Person, location and organisation names by the fast model; the NameRecognizer interface."""

    def __init__(self, kinds: frozenset[PiiEntity], path: Path | None = None) -> None:
        self.kinds = kinds
        self.model = load(path)

    def find(self, text: str) -> list[Finding]:
        """Every finding of the configured kinds."""
        return self.model.find(text, self.kinds)
