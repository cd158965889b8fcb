"""Names, places and organisations by a small linear model over capitalised words: linear time, numpy only.

Every capitalised word (a fixed set of function words aside) is a candidate. Its features
are the word, its suffixes and shape, which gazetteers it is in (first names, surnames, cities,
countries, regions, company words, street words, titles — from Faker's providers in all its
locales, MIT — and "a common lowercase word" from prose), and the two words on each side with their
gazetteer bits. A multinomial logistic regression (``training/ner_train.py``; weights and
gazetteer in ``data/ner_fast.npz``) labels each candidate O, PER, LOC, ORG or ADDR (part of a street
address: left to the address patterns). Adjacent words of one label, joined by a space, a hyphen or
a connector that kind allows ("van", "de", "&", "and"), make one finding.

Cost: numpy passes over the character codes that find the tokens (``pii_tokens``), a Python step
only for each capitalised token and the two tokens on each side of a candidate (cut out of the text,
numbered among the distinct ones), and numpy for the rest: the flags and feature ids of each capitalised
token and of the two tokens on each side of a candidate are computed once per process while they stay
among the 32,768 most recent (a bounded LRU, ~0.3 KB each), the context words are the token codes
shifted, and one gather sums every candidate's weight rows. On one loaded core: ~0.1 ms per KB of
prose, ~0.25 ms per KB of text dense with names, plus ~4-7 us per such token not seen before (a text
of nothing but unseen names costs about what the per-text caches before it did: ~0.7 ms per KB).
Nothing is tried more than once per token: linear in the input by construction, and thread-safe.
"""

from __future__ import annotations

import functools
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from opsgate.domain.guard_config import PiiEntity
from opsgate.guard.injection_arrays import group
from opsgate.guard.pii_base import Finding, char_codes, looks_like_code
from opsgate.guard.pii_tokens import TOKEN, token_spans

MODEL_PATH = Path(__file__).parent / "data" / "ner_fast.npz"
LABELS = ("O", "PER", "LOC", "ORG", "ADDR")
_KIND: dict[int, PiiEntity] = {1: "person", 2: "location", 3: "organization"}
# Gazetteer bits (``training/ner_gazetteer.py`` writes them).
GAZ_BITS = ("first", "last", "city", "country", "region", "orgword", "street", "title", "common")


# Tokens: leading whitespace, then a word (inner apostrophes, hyphens, "&") or one other character (``pii_tokens``).
_TOKEN = TOKEN
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
    "hi hello hey dear ok okay "
    # The same words that open sentences in the other languages prompts come in (determiners, possessives,
    # pronouns, prepositions, greetings): "Mi teléfono", "Il mio", "Unser Büro" were places and people.
    # A word that is also a first name or surname in the gazetteer stays a candidate ("Ma", "Son").
    "el la los las un una unos unas mi mis tu tus su sus nuestro nuestra nuestros nuestras este esta estos "
    "estas ese esa eso por para con sin sobre entre hola gracias buenos buenas muy "
    "o os um uma meu minha meus minhas seu sua nosso nossa isso com sem olá obrigado obrigada sim não "
    "il lo gli le uno mio mia miei mie tuo tua suo nostro nostra questo questa senza ciao grazie "
    "les une des mon ma mes ton ta tes son sa ses notre nos votre vos ce cette ces pour avec sans bonjour "
    "merci oui non je nous vous elle ils elles "
    "der die das ein eine einen einem einer mein meine meinen unser unsere ihr ihre sein seine dies diese "
    "dieser für mit ohne hallo danke ja nein ich wir sie er es bitte "
    "het een mijn onze ons jouw uw deze dit voor met zonder dank nee ik wij"
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
        # Per (gazetteer bits, position): the position part's feature ids, one padded row each.
        keys = [(bits, position) for bits in range(512) for position in _POSITIONS]
        rows = [self._padded(_position_part(bits, position), _POSITION_WIDTH) for bits, position in keys]
        self._positions = np.array(rows, dtype=np.int32)
        self._pairs = _PairTable(vocabulary)
        # The ids of the features that depend only on a number: gazetteer bits, a length, "not capitalised".
        self._bit_ids = {prefix: [self._ids(names) for names in _bit_features(prefix)] for prefix in _BIT_PREFIXES}
        self._length_ids = self._ids(["len=" + str(min(length, 12)) for length in range(13)])
        self._dash_ids = self._ids(["p1s=-", "n1s=-"])
        # A token's row (its flags and the ids of its features as a candidate and as a context word),
        # computed once per process while it stays among the most recent tokens: names and function
        # words repeat across texts. Thread-safe; bounded (~0.3 KB a token).
        self._row = functools.lru_cache(maxsize=1 << 15)(self._token_row)

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

        The features ``candidates`` computes (test_pii_fast checks the logits agree, bit for bit), with
        no Python step per token: the tokens' bounds come from numpy (``token_spans``), and only the
        capitalised ones and those around a candidate are cut out; each distinct one's row of flags and
        feature ids comes from ``_row``; the context words are the candidates' numbers shifted by one
        and two; every candidate's ids are gathered and summed in one ``reduceat``, in the order of its
        features.
        """
        starts, ends, capital = token_spans(text)
        count = ends.size
        at = np.flatnonzero(capital)
        if not at.size:
            return [], np.zeros((0, len(LABELS)), dtype=np.float32)
        # Only the capitalised tokens and the two tokens on each side are read: those are cut out of the text
        # (once each), each distinct one's row (from the LRU) makes the table, and ``slot`` (shifted by 2) maps a
        # token's number to its row, "" (the empty row) before the first token and after the last.
        marked = np.zeros(count + 4, dtype=bool)
        for shift in range(5):
            marked[at + shift] = True
        near = np.flatnonzero(marked[2:-2])
        distinct, index = _numbered(text, starts, ends, near)
        # "" and "<nl>" are no tokens (a token holds a word or one character that is neither white space nor \w).
        empty, newline_code = len(distinct), len(distinct) + 1
        slot = np.full(count + 4, empty, dtype=np.intp)
        slot[near + 2] = index
        rows = b"".join([self._row(token) for token in (*distinct, "", "<nl>")])
        table = np.frombuffer(rows, dtype=np.int32).reshape(-1, _ROW_WIDTH)
        # Function words ("The", "If") are no candidates.
        at = at[table[slot[at + 2], _CANDIDATE_AT] == 1]
        if not at.size:
            return [], np.zeros((0, len(LABELS)), dtype=np.float32)
        return self._scored(
            table, slot[at + 2], slot[at + 1], slot[at], slot[at + 3], slot[at + 4], ends[at], newline_code
        )

    def _scored(
        self,
        table: NDArray[np.int32],
        word: NDArray[np.intp],
        p1: NDArray[np.intp],
        p2: NDArray[np.intp],
        n1: NDArray[np.intp],
        n2: NDArray[np.intp],
        word_ends: NDArray[np.intp],
        newline_code: int,
    ) -> tuple[list[tuple[int, int, int]], NDArray[np.float32]]:
        """``scores`` of the candidates whose token (``word``) and the two on each side are rows of ``table``
        (``newline_code``: the row of "<nl>"); ``word_ends``: where each candidate's token ends in the text."""
        # A capitalised word glued to the token before it (no whitespace between) is part of something else.
        keep = ~((table[word, _SPACED_AT] == 0) & (table[p1, _GLUE_AT] == 1))
        if not keep.any():
            return [], np.zeros((0, len(LABELS)), dtype=np.float32)
        word, p1, p2, n1, n2, word_ends = word[keep], p1[keep], p2[keep], n1[keep], n2[keep], word_ends[keep]
        breaks = table[word, _NEWLINE_AT] == 1
        p1, p2 = np.where(breaks, newline_code, p1), np.where(breaks, p1, p2)
        breaks_after = table[n1, _NEWLINE_AT] == 1
        n1, n2 = np.where(breaks_after, newline_code, n1), np.where(breaks_after, n1, n2)
        bits = table[word, _BITS_AT]
        position = 4 * table[p1, _SENTENCE_AT] + 2 * table[p1, _CAPITAL_AT] + table[n1, _CAPITAL_AT]
        pair_words = table[:, _PAIR_AT]
        ids = np.concatenate(
            (
                np.full((word.size, 1), self.bias_row, dtype=np.int32),
                table[word, _WORD_IDS],
                self._positions[bits * 8 + position],
                table[p1, _BEFORE_IDS],
                table[n1, _AFTER_IDS],
                table[p2, _P2_AT : _P2_AT + 1],
                table[n2, _N2_AT : _N2_AT + 1],
                self._pairs.ids(0, pair_words[p2], pair_words[p1], self.unknown_row),
                self._pairs.ids(1, pair_words[n1], pair_words[n2], self.unknown_row),
                self._pairs.ids(2, pair_words[p1], pair_words[n1], self.unknown_row),
            ),
            axis=1,
        )
        # The padding dropped, each candidate's ids are its features' in order: the same sums, bit for bit.
        kept = ids >= 0
        starts_at = np.concatenate(([0], np.cumsum(kept.sum(axis=1))[:-1]))
        logits = np.add.reduceat(self.weights[ids[kept]], starts_at, axis=0)
        word_starts = word_ends - table[word, _LENGTH_AT]
        spans = list(zip(word_starts.tolist(), (word_ends - table[word, _CUT_AT]).tolist(), bits.tolist(), strict=True))
        return spans, logits

    def _ids(self, features: list[str]) -> list[int]:
        """Feature ids, unknown ones the zero row."""
        return [self.vocabulary.get(feature, self.unknown_row) for feature in features]

    def _padded(self, features: list[str], width: int) -> list[int]:
        """Feature ids (unknown ones the zero row), padded with ``_PAD`` to ``width``."""
        ids = [self.vocabulary.get(feature, self.unknown_row) for feature in features]
        return ids + [_PAD] * (width - len(ids))

    def _token_row(self, token: str) -> bytes:
        """Everything ``scores`` needs of one token (its leading whitespace, then a word or a character):
        the flags and lengths of ``_ROW_FLAGS``, then the feature ids, as int32 bytes. The ids are those
        of ``_word_part`` and ``_side_part``'s features, with the bit and length features' ids precomputed."""
        word = token.lstrip()
        capital = word[:1].isupper()
        lower = word.lower()
        vocab, unknown = self.vocabulary.get, self.unknown_row
        cut = candidate = bits = 0
        own = _NO_IDS
        if capital:
            if word.endswith(_POSSESSIVE) and len(word) > 2:
                cut = 1 if word[-1] in "'\u2019" else 2
            stem = word[: len(word) - cut]
            stem_lower = stem.lower()
            bits = self.gazetteer.get(stem_lower, 0)
            shape = _shape(word)
            if not (stem_lower in _STOP and not bits & 0b11):
                candidate = 1
                own = self._own_ids(stem, stem_lower, bits, shape if not cut else _shape(stem))
            side_bits = bits if not cut else self.gazetteer.get(lower, 0)
            before = [vocab("p1=" + lower, unknown), vocab("p1s=" + shape, unknown), *self._bit_ids["pg="][side_bits]]
            after = [vocab("n1=" + lower, unknown), vocab("n1s=" + shape, unknown), *self._bit_ids["ng="][side_bits]]
        else:
            before = [vocab("p1=" + lower, unknown), self._dash_ids[0]]
            after = [vocab("n1=" + lower, unknown), self._dash_ids[1]]
        flags = [
            capital,
            word in _GLUE,
            word in _SENTENCE_START,
            candidate,
            cut,
            bits,
            self._pairs.words.get(lower, -1),
            vocab("p2=" + lower, unknown),
            vocab("n2=" + lower, unknown),
            len(word),
            len(token),
            "\n" in token,
            len(token) != len(word),
        ]
        before += [_PAD] * (_SIDE_WIDTH - len(before))
        after += [_PAD] * (_SIDE_WIDTH - len(after))
        return array("i", flags + own + before + after).tobytes()

    def _own_ids(self, word: str, lower: str, bits: int, shape: str) -> list[int]:
        """The ids of ``_word_part(word, lower, bits)`` (``shape``: ``_shape(word)``), padded to ``_WORD_WIDTH``."""
        vocab, unknown = self.vocabulary.get, self.unknown_row
        ids = [
            vocab("w=" + lower, unknown),
            vocab("s4=" + lower[-4:], unknown),
            vocab("s3=" + lower[-3:], unknown),
            vocab("s2=" + lower[-2:], unknown),
            vocab("pre3=" + lower[:3], unknown),
            vocab("shape=" + shape, unknown),
            self._length_ids[min(len(word), 12)],
            *self._bit_ids["g="][bits],
        ]
        if "-" in word:
            both = -1
            for part in lower.split("-"):
                both &= self.gazetteer.get(part, 0)
            ids += self._bit_ids["hy="][both & 511]
        return ids + [_PAD] * (_WORD_WIDTH - len(ids))

    def find(self, text: str, kinds: frozenset[PiiEntity]) -> list[Finding]:
        """Findings of ``kinds``: runs of capitalised words of one label, joined by what that kind allows."""
        spans, logits = self.scores(text)
        if not spans:
            return []
        labels = logits.argmax(axis=1)
        # A first name the model left out of the surname right after it ("Thomas Carpenter" read as
        # O + PER: Faker's street names are built from first names too) joins the person.
        for index in np.flatnonzero((labels[:-1] % 4 == 0) & (labels[1:] == 1)).tolist():
            if spans[index][2] & 1 and text[spans[index][1] : spans[index + 1][0]] == " ":
                labels[index] = 1
        # Runs of one label: only the named candidates are visited; any other candidate between two
        # ends a run (its index is not the one after the run's last).
        findings: list[Finding] = []
        run_start = run_end = last = -2
        run_label = 0
        named = np.flatnonzero((labels >= 1) & (labels <= 3))
        for index, label in zip(named.tolist(), labels[named].tolist(), strict=True):
            start, end, _ = spans[index]
            if index == last + 1 and label == run_label and _joinable(text[run_end:start], label):
                run_end, last = end, index
                continue
            _emit(text, run_label, run_start, run_end, kinds, findings)
            run_start, run_end, run_label, last = start, end, label, index
        _emit(text, run_label, run_start, run_end, kinds, findings)
        return findings


def _cut(text: str, starts: NDArray[np.intp], ends: NDArray[np.intp], which: NDArray[np.intp]) -> list[str]:
    """The tokens numbered ``which`` (``token_spans``' bounds)."""
    return [text[start:end] for start, end in zip(starts[which].tolist(), ends[which].tolist(), strict=True)]


_PACKED = 8  # characters: an ASCII token of up to this many is told apart by its bytes packed into one integer
_LOW_BYTES = np.array([(1 << 8 * n) - 1 for n in range(_PACKED + 1)], dtype=np.uint64)  # masks of the first n bytes


def _numbered(
    text: str, starts: NDArray[np.intp], ends: NDArray[np.intp], which: NDArray[np.intp]
) -> tuple[list[str], list[int] | NDArray[np.int64]]:
    """The distinct tokens among those numbered ``which`` (in no set order), and each one's index among them.

    In an ASCII text with no NUL, a token of up to ``_PACKED`` characters (most of them: a word and the white
    space before it) is its bytes packed into an integer, and equal integers are equal tokens: they are
    numbered by numpy (``injection_arrays.group``) and only the distinct ones are cut out of the text; the
    longer ones one by one. Elsewhere every token is cut out and numbered through a dict.
    """
    codes = char_codes(text)
    if codes.dtype != np.uint8 or "\x00" in text:
        local: dict[str, int] = {}
        numbered_all = [local.setdefault(token, len(local)) for token in _cut(text, starts, ends, which)]
        return list(local), numbered_all
    first, last = starts[which], ends[which]
    lengths = last - first
    short = lengths <= _PACKED
    raw = np.zeros(len(codes) + _PACKED, dtype=np.uint8)
    raw[: len(codes)] = codes
    at = np.ndarray((len(codes),), dtype="<u8", buffer=raw, strides=(1,))  # 8 bytes from each place
    packed = (at[first[short]] & _LOW_BYTES[lengths[short]]).astype(np.uint64, copy=False)
    values, numbers = group(packed)
    stands = np.empty(len(values), dtype=np.intp)
    stands[numbers] = np.arange(len(numbers))  # any one place of each value: its tokens are equal
    index = np.empty(len(which), dtype=np.int64)
    index[short] = numbers
    distinct = _cut(text, first[short], last[short], stands)
    longer = np.flatnonzero(~short)
    if len(longer):
        numbered: dict[str, int] = {}
        base = len(distinct)
        tokens = _cut(text, first, last, longer)
        index[longer] = [numbered.setdefault(token, base + len(numbered)) for token in tokens]
        distinct += numbered
    return distinct, index


def _bit_features(prefix: str) -> list[list[str]]:
    """For every combination of gazetteer bits, its features: ``prefix + name`` for each bit set."""
    return [[prefix + name for index, name in enumerate(GAZ_BITS) if bits >> index & 1] for bits in range(512)]


_G, _PG, _NG, _HY = _bit_features("g="), _bit_features("pg="), _bit_features("ng="), _bit_features("hy=")


# A candidate's position as a number: 4 if sentence start, + 2 if a capitalised word before, + 1 if one after.
_POSITIONS = [b + p + n for b in "bB" for p in "pP" for n in "nN"]
# Widths of the padded feature-id parts: a word's own features (7, then up to 9 gazetteer and 9 hyphen
# bits), a context word's (2 + 9 bits), a position's (pos=, g=none or up to 9 bits).
_WORD_WIDTH, _SIDE_WIDTH, _POSITION_WIDTH = 25, 11, 11
_PAD = -1  # not a feature: dropped before the sum
_NO_IDS = [_PAD] * _WORD_WIDTH
_BIT_PREFIXES = ("g=", "pg=", "ng=", "hy=")
# The layout of a token's row (``FastNames._token_row``): flags and lengths, then feature ids.
_ROW_FLAGS = ("capital", "glue", "sentence", "candidate", "cut", "bits", "pair", "p2", "n2", "length",
              "token_length", "newline", "spaced")  # fmt: skip
(_CAPITAL_AT, _GLUE_AT, _SENTENCE_AT, _CANDIDATE_AT, _CUT_AT, _BITS_AT, _PAIR_AT, _P2_AT, _N2_AT, _LENGTH_AT,
 _TOKEN_LENGTH_AT, _NEWLINE_AT, _SPACED_AT) = range(len(_ROW_FLAGS))  # fmt: skip
_WORD_IDS = slice(len(_ROW_FLAGS), len(_ROW_FLAGS) + _WORD_WIDTH)
_BEFORE_IDS = slice(_WORD_IDS.stop, _WORD_IDS.stop + _SIDE_WIDTH)
_AFTER_IDS = slice(_BEFORE_IDS.stop, _BEFORE_IDS.stop + _SIDE_WIDTH)
_ROW_WIDTH = _AFTER_IDS.stop
_PAIR_PREFIXES = ("p2p1=", "n1n2=", "p1n1=")


class _PairTable:
    """The two-word features (``_pairs``: "p2p1=a_b", "n1n2=…", "p1n1=…") as sorted integer keys.

    Each lowercased word that occurs in one gets a number; a pair is the key ``a * size + b``. A word
    holding "_" makes the split ambiguous, so every split is registered: any split that matches two
    words of a text spells the same feature string, so it is the feature the string look-up finds.
    """

    def __init__(self, vocabulary: dict[str, int]) -> None:
        self.words: dict[str, int] = {}
        found: list[list[tuple[str, str, int]]] = [[] for _ in _PAIR_PREFIXES]
        for name, index in vocabulary.items():
            if name[:5] in _PAIR_PREFIXES:
                pair = name[5:]
                for cut in [i for i, ch in enumerate(pair) if ch == "_"]:
                    first, second = pair[:cut], pair[cut + 1 :]
                    self.words.setdefault(first, len(self.words))
                    self.words.setdefault(second, len(self.words))
                    found[_PAIR_PREFIXES.index(name[:5])].append((first, second, index))
        self.size = len(self.words) + 1
        self.keys: list[NDArray[np.int64]] = []
        self.values: list[NDArray[np.int32]] = []
        for pairs in found:
            keys = np.array([self.words[a] * self.size + self.words[b] for a, b, _ in pairs], dtype=np.int64)
            order = np.argsort(keys, kind="stable")
            # A sentinel above every key, so a search never runs off the end.
            self.keys.append(np.append(keys[order], np.iinfo(np.int64).max))
            self.values.append(np.append(np.array([i for *_, i in pairs], dtype=np.int32)[order], -1))

    def word(self, lower: str) -> int:
        """The number of a lowercased word, or -1 where it is in no two-word feature."""
        return self.words.get(lower, -1)

    def ids(self, kind: int, first: NDArray[np.int32], second: NDArray[np.int32], unknown: int) -> NDArray[np.int32]:
        """Feature ids of the pairs (``first``, ``second``) of ``_PAIR_PREFIXES[kind]``, as a column."""
        keys = first.astype(np.int64) * self.size + second
        at = np.searchsorted(self.keys[kind], keys)
        hit = (first >= 0) & (second >= 0) & (self.keys[kind][at] == keys)
        return np.where(hit, self.values[kind][at], unknown).astype(np.int32)[:, None]


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
