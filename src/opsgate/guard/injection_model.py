"""The learned injection detector: logistic regression on word, word-pair and character-trigram features,
scored over overlapping windows of the text and maximised, so an instruction buried in a long
document is judged on its own window, not diluted by the document around it.

Numpy only at run time: the vocabulary, weights and calibration come from
``guard/data/injection_model.npz``, written by ``python -m opsgate.guard.training.train`` (seeded,
reproducible; data and provenance in ``data/guard/injection/``). Why not a head on the MiniLM
sentence embeddings the gateway already loads: one 256-token forward pass of it costs ~40 ms of CPU
here, so a 32 KB prompt (~30 windows) would take seconds; this model scores 32 KB in milliseconds
and, with character trigrams, reads the other languages and the disguised spellings too.

``normalise``, ``tokens``, ``token_features`` and ``window_features`` define the features (training
uses them); ``InjectionModel.window_logits`` computes the same logits with numpy, and
``bench/injection_parity.py`` holds the two equal.
"""

from __future__ import annotations

import math
import re
import struct
import threading
import unicodedata
from array import array
from dataclasses import dataclass
from functools import cache
from itertools import chain, count
from pathlib import Path
from typing import cast

import numpy as np
from numpy.typing import NDArray

from opsgate.guard.injection_arrays import block_tokens as _block_tokens
from opsgate.guard.injection_arrays import contains as _contains
from opsgate.guard.injection_arrays import distinct_codes as _distinct
from opsgate.guard.injection_arrays import firsts as _firsts
from opsgate.guard.injection_arrays import group as _group
from opsgate.guard.injection_lexicon import concept_features, concepts, features_of, may_have_concepts
from opsgate.guard.injection_pairs import PairTable

MODEL_PATH = Path(__file__).parent / "data" / "injection_model.npz"
WINDOW = 48  # tokens per window
STRIDE = 24  # windows overlap by half, so an instruction is whole in at least one of them
_TOKEN = re.compile(r"\w+|[^\w\s]")  # a run of word characters or one symbol (linear: no nesting)
_MAX_GRAM_CHARS = 64  # character trigrams from at most this much of one token (CJK runs are long)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# Zero-width and format characters, and the Unicode tag block (U+E0000-E007F: "ASCII smuggling",
# decoded separately by ``injection_decoders``).
_INVISIBLE = dict.fromkeys(
    [*map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\ufeff\u00ad"), *range(0xE0000, 0xE0080)], None
)
_HAS_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2063\ufeff\U000e0000-\U000e007f]")  # ranges: a fast class


def normalise(text: str) -> str:
    """Lower case, invisible characters dropped, accents removed (``contraseña`` → ``contrasena``)."""
    if text.isascii():
        return text.lower()
    # ``translate`` with a dict costs a lookup per character on non-ASCII text: only when needed.
    if _HAS_INVISIBLE.search(text):
        text = text.translate(_INVISIBLE)
    text = text.lower().replace("\u0131", "i")  # Turkish dotless i
    if text.isascii():
        return text
    # Only the runs of non-ASCII characters: NFKD decomposes character by character and reorders
    # only combining marks (never across an ASCII character), so run by run is the whole text's
    # NFKD, and mostly-English text costs a regex pass instead of a Python loop per character.
    return _NON_ASCII.sub(_strip_accents, text)


def _strip_accents(run: re.Match[str]) -> str:
    decomposed = unicodedata.normalize("NFKD", run.group(0))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def tokens(text: str) -> list[str]:
    """The normalised text's tokens."""
    return _TOKEN.findall(normalise(text))


def token_features(token: str) -> list[str]:
    """A token's own features: the word and its character trigrams (with boundary marks)."""
    marked = f"<{token[:_MAX_GRAM_CHARS]}>"
    return [f"w:{token}", *(f"c:{marked[i : i + 3]}" for i in range(len(marked) - 2))]


def window_features(toks: list[str]) -> list[set[str]]:
    """The feature set of each window of ``toks`` (one window for a short text): words, word pairs,
    character trigrams, and the multilingual concepts of ``injection_lexicon``."""
    starts = range(0, max(1, len(toks) - WINDOW + STRIDE), STRIDE) if len(toks) > WINDOW else range(1)
    per_token = {token: token_features(token) for token in set(toks)}
    out = []
    for start in starts:
        part = toks[start : start + WINDOW]
        found = concept_features(part)
        for index, token in enumerate(part):
            found.update(per_token[token])
            if index + 1 < len(part):
                found.add(f"b:{token} {part[index + 1]}")
        out.append(found)
    return out


# The fast path's pieces. Tokens: cut with numpy (``_token_ids``); their features' integer keys
# cached across texts (``_Keys``); a window's distinct features found by sorting integer codes.
_TOKEN_CACHE = 100_000  # distinct tokens whose keys are kept (bounded: tokens come from clients)
_MAX_KEPT_FEATURE = _MAX_GRAM_CHARS + 2  # "w:" and a token of at most this much: longer ones are not cached
_UNKNOWN_CACHE = 250_000  # unknown features numbered before starting again (~30 MB of strings at most)
_NUMPY_FROM = 4096  # characters: a shorter text is cut by ``_TOKEN`` (numpy's cost per call dominates there)
_PACKED = 8  # ASCII tokens of up to 8 characters are told apart by their bytes packed into one integer
_DEDUPLICATED_FROM = 2048  # pair entries: fewer are looked up as they are (the extra passes cost more there)
_RADIX_FROM = 4096  # feature entries: fewer are sorted at once (the radix sort's extra passes cost more there)


def _kind(char: str) -> int:
    """A character's part in a token, as ``_TOKEN`` reads it: 0 white space, 1 word character, 2 a symbol."""
    return 1 if re.fullmatch(r"\w", char) else 0 if re.fullmatch(r"\s", char) else 2


_ASCII_KIND = np.array([_kind(chr(c)) for c in range(128)], dtype=np.int8)
_KIND_BYTES = bytes(_ASCII_KIND.tolist() + [2] * 128)  # for ``bytes.translate`` (ASCII text: only the first half)
_LOW_BYTES = np.array([(1 << 8 * n) - 1 for n in range(_PACKED + 1)], dtype=np.uint64)  # masks of the first n bytes


# A token as a cache key: its string, or (cut by numpy, 8 ASCII characters at most) its bytes as an integer.
TokenKey = str | int


def _name(key: TokenKey) -> str:
    """The token a key stands for (only the symbol NUL packs to 0: no other token holds a zero byte)."""
    return key if isinstance(key, str) else key.to_bytes(_PACKED, "little").rstrip(b"\x00").decode("ascii") or "\x00"


def _token_ids(text: str) -> tuple[list[str], NDArray[np.int64]]:
    """The distinct tokens of ``tokens(text)`` and each token's index among them: the same tokens, found faster."""
    keys, ids = _token_keys(text)
    return list(map(_name, keys)), ids


def _token_keys(text: str) -> tuple[list[TokenKey], NDArray[np.int64]]:
    """``_token_ids`` with each distinct token as its key (``TokenKey``): most need never become strings.

    A text of 4 KB or more is cut with numpy instead of ``_TOKEN.findall`` (a token starts at a
    symbol, or at a word character after a non-word one). Short ASCII tokens (most of them) are
    grouped by their bytes packed into an integer, and those integers are their keys (a string is
    made only for a token new to the cache); longer ones are sliced out one by one.
    """
    lowered = normalise(text)
    if len(lowered) < _NUMPY_FROM:
        toks = _TOKEN.findall(lowered)
        names: list[TokenKey] = list(dict.fromkeys(toks))
        index = dict(zip(names, range(len(names)), strict=True))
        return names, np.fromiter(map(index.__getitem__, toks), dtype=np.int64, count=len(toks))
    chars: NDArray[np.uint8] | NDArray[np.uint32]
    if lowered.isascii():
        encoded = lowered.encode("ascii")
        chars = np.frombuffer(encoded, dtype=np.uint8)
        kind = np.frombuffer(encoded.translate(_KIND_BYTES), dtype=np.int8)
    else:
        chars = np.frombuffer(lowered.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        wide = chars >= 128
        kind = _ASCII_KIND[np.where(wide, 0, chars)]
        others = np.unique(chars[wide])
        kinds = np.array([_kind(chr(c)) for c in others.tolist()], dtype=np.int8)
        kind[wide] = kinds[np.searchsorted(others, chars[wide])]
    word = np.concatenate(([False], kind == 1, [False]))
    symbol = kind == 2
    starts = np.flatnonzero(symbol | (word[1:-1] & ~word[:-2]))
    ends = np.flatnonzero(symbol | (word[1:-1] & ~word[2:])) + 1
    lengths = ends - starts
    short = lengths <= _PACKED
    if chars.dtype != np.uint8:
        before = np.concatenate(([0], np.cumsum(wide)))  # non-ASCII characters before each position
        short &= before[ends] == before[starts]
    ids = np.empty(len(starts), dtype=np.int64)
    # Short ASCII tokens' bytes, zeros after them (a token holds no zero byte, bar the symbol "\x00" alone):
    # the 8 bytes from each position read as one little-endian integer (a view, stride one byte), masked.
    raw = np.zeros(len(chars) + _PACKED, dtype=np.uint8)
    raw[: len(chars)] = chars  # a non-ASCII character's byte is garbage, but no packed token has one
    at = np.ndarray((len(chars),), dtype="<u8", buffer=raw, strides=(1,))
    packed = (at[starts[short]] & _LOW_BYTES[lengths[short]]).astype("<u8", copy=False)
    distinct_packed, ids[short] = _group(packed)
    names = distinct_packed.tolist()
    longer = np.flatnonzero(~short)
    if len(longer):
        words = [lowered[a:b] for a, b in zip(starts[longer].tolist(), ends[longer].tolist(), strict=True)]
        numbers: dict[str, int] = {}
        first_id = len(names)  # each new word numbered in order of first appearance, from here
        ids[longer] = np.fromiter(
            (numbers.setdefault(word, first_id + len(numbers)) for word in words), dtype=np.int64, count=len(words)
        )
        names += numbers
    return names, ids


# A token's concept bits, index among known pairs' first and second tokens (-1: none), and feature keys, as
# int64 bytes: a text's tokens' are joined and read by numpy at once.
_Info = bytes
_HEADER = 3  # the int64s before the feature keys
_pack_header = struct.Struct("=3q").pack  # three int64s in native byte order, as ``array("q")`` writes them
_pack_key = struct.Struct("=q").pack
_GRAMS_FROM = 8  # missing word tokens: fewer take ``token_features`` (numpy's cost per call dominates there)


# Word tokens (most new tokens) have their character trigrams keyed with numpy, not one string each: a trigram
# of these characters (a word token's, with its boundary marks) is a number below ``_GRAMS``.
_GRAM_CHARS = "<>0123456789_abcdefghijklmnopqrstuvwxyz"
_GRAMS = len(_GRAM_CHARS) ** 3
_GRAM_INDEX = {char: i for i, char in enumerate(_GRAM_CHARS)}
_GRAM_BYTES = np.full(256, -1, dtype=np.int64)
_GRAM_BYTES[np.frombuffer(_GRAM_CHARS.encode("ascii"), dtype=np.uint8)] = np.arange(len(_GRAM_CHARS))
_WORD_TOKEN = re.compile(r"[0-9_a-z]+")  # ``fullmatch``: a token of those characters alone, bar the marks


def _gram_code(feature: str) -> int | None:
    """The number of a ``c:`` feature whose three characters are all of ``_GRAM_CHARS``, else None."""
    if len(feature) != 5 or not feature.startswith("c:"):
        return None
    a, b, c = _GRAM_INDEX.get(feature[2]), _GRAM_INDEX.get(feature[3]), _GRAM_INDEX.get(feature[4])
    if a is None or b is None or c is None:
        return None
    return (a * len(_GRAM_CHARS) + b) * len(_GRAM_CHARS) + c


def _gram_table(vocabulary: dict[str, int]) -> NDArray[np.int64]:
    """Each trigram number's key: its vocabulary index, or the number ``_Keys`` sets aside for it."""
    table = np.arange(_GRAMS, dtype=np.int64) + len(vocabulary) + 1
    for name, index in vocabulary.items():
        if name.startswith("c:") and (code := _gram_code(name)) is not None:
            table[code] = index
    return table


class _Keys:
    """Integer keys of features: a known one's vocabulary index, an unknown one the next number after them.

    Tokens' keys are kept across texts (a chat re-sends its history every turn), bounded since tokens
    come from clients: when full, the model starts a new ``_Keys`` and a scoring in flight keeps the
    one it started with, so its keys stay consistent. ``next`` on ``itertools.count`` is atomic under
    the GIL: two threads never give one number to two features.
    """

    def __init__(self, vocabulary: dict[str, int]) -> None:
        self.vocabulary = vocabulary
        self.tokens: dict[TokenKey, _Info] = {}
        self.unknown: dict[str, int] = {}
        # ``len(vocabulary)`` itself: the weight table's 0; then a number set aside for every trigram of
        # ``_GRAM_CHARS`` (``_gram_keys``); then the others, numbered as they come.
        self.grams_from = len(vocabulary) + 1
        self._next = count(self.grams_from + _GRAMS)

    def unknown_key(self, feature: str) -> int:
        """The number of a feature not in the vocabulary."""
        index = self.unknown.get(feature)
        if index is not None:
            return index
        gram = _gram_code(feature)
        if gram is not None:  # the number ``_gram_keys`` gives it (kept: the next lookup is one ``get``)
            return self.unknown.setdefault(feature, self.grams_from + gram)
        return self.unknown.setdefault(feature, next(self._next))

    def beyond(self) -> int:
        """A number above every key given so far."""
        return next(self._next)

    def full(self) -> bool:
        """Whether to start afresh."""
        return len(self.tokens) >= _TOKEN_CACHE or len(self.unknown) >= _UNKNOWN_CACHE


@dataclass(frozen=True)
class Calibration:
    """Maps a window's logit to a probability (Platt: ``sigmoid(a * z + b)``) and to the decision score."""

    a: float
    b: float
    # The logit of the chosen operating point: the decision score is 0.5 there.
    operating_logit: float

    def probability(self, logit: float) -> float:
        """The calibrated probability that the text is an attack."""
        return 1.0 / (1.0 + math.exp(-(self.a * logit + self.b)))

    def decision(self, logit: float) -> float:
        """0-1, crossing 0.5 at the operating point (what the scanner's threshold is compared with)."""
        return 1.0 / (1.0 + math.exp(-self.a * (logit - self.operating_logit)))


class InjectionModel:
    """Scores texts; built from the shipped ``.npz`` (or any file of the same layout)."""

    def __init__(self, vocabulary: dict[str, int], weights: NDArray[np.float32], bias: float, calibration: Calibration):
        self.vocabulary = vocabulary
        self.weights = weights
        self.bias = bias
        self.calibration = calibration
        self._keys = _Keys(vocabulary)
        self._gram_keys = _gram_table(vocabulary)
        self._concept_bits: dict[str, int] = {}
        self._concept_lock = threading.Lock()  # scanners run in a thread pool: one bit per concept
        self._concept_cost: dict[int, tuple[int, float]] = {}
        # Known features' weights in float64, then a 0 for every other key.
        self._weights64 = np.append(weights.astype(np.float64), 0.0)
        self._weight_list: list[float] = self._weights64.tolist()  # indexed one by one in a short text
        # Known pairs ``b:x y`` as integers: x's index among first tokens * len(seconds) + y's, in a hash table.
        self._firsts: dict[str, int] = {}
        self._seconds: dict[str, int] = {}
        rows = [
            (
                self._firsts.setdefault(parts[0], len(self._firsts)),
                self._seconds.setdefault(parts[1], len(self._seconds)),
                i,
            )
            for name, i in vocabulary.items()
            if name.startswith("b:") and len(parts := name[2:].split(" ")) == 2
        ]
        table = np.array(rows, dtype=np.int64).reshape(-1, 3)
        self._pairs = PairTable(table[:, 0] * len(self._seconds) + table[:, 1], table[:, 2])

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> InjectionModel:
        """The model stored at ``path``."""
        with np.load(path, allow_pickle=False) as data:
            names = bytes(data["vocabulary"]).decode("utf-8").split("\n")
            calibration = Calibration(*(float(x) for x in data["calibration"]))
            return cls(
                {name: i for i, name in enumerate(names)},
                data["weights"].astype(np.float32),
                float(data["bias"]),
                calibration,
            )

    def save(self, path: Path) -> None:
        """Write the model (vocabulary as one UTF-8 blob: compact, and no pickles)."""
        names = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        cal = self.calibration
        np.savez_compressed(
            path,
            vocabulary=np.frombuffer("\n".join(names).encode("utf-8"), dtype=np.uint8),
            weights=self.weights.astype(np.float16),
            bias=np.float64(self.bias),
            calibration=np.array([cal.a, cal.b, cal.operating_logit], dtype=np.float64),
        )

    def window_logits(self, text: str) -> list[float]:
        """The logit of each window of ``text``: bias + weights of its known features / sqrt(all its features).

        The features of ``window_features`` (what training saw), computed with numpy. Feature kinds
        never collide (``w:``/``c:`` of tokens, ``b:`` pairs, ``k:`` concepts: different prefixes),
        so each is counted on its own terms: a token's features by their integer keys (cached across
        texts), a pair by its two tokens, the concepts as a bit mask. Window w is the half-window
        blocks w and w+1, so one sort finds each distinct (feature, block), and a window's count and
        weight sum are its two blocks' less what both blocks have; the pair across the blocks'
        boundary (in window w only) is added on its own.
        """
        names, ids = _token_keys(text)
        size = len(ids)
        keys = self._keys
        if keys.full():
            keys = self._keys = _Keys(self.vocabulary)
        if size <= WINDOW:
            return [self._short_logit(keys, names, ids.tolist())]
        infos = self._infos(keys, names)
        distinct, blocks = len(names), -(-size // STRIDE)
        windows = blocks - 1
        # Integer codes are packed with shifts, not products (numpy's integer division is slow).
        token_bits, block_bits = distinct.bit_length(), blocks.bit_length()
        pair_base = keys.beyond()  # a pair's key: pair_base + (first << token_bits | second), above every feature's
        if (pair_base + (1 << 2 * token_bits)) << block_bits >= 1 << 62:
            return self._logits_of(window_features(tokens(text)))  # past int64 codes (gigabytes of text)
        flat = np.frombuffer(b"".join(infos), dtype=np.int64)
        sizes = np.fromiter(map(len, infos), dtype=np.int64, count=distinct) // 8
        heads = np.cumsum(sizes) - sizes  # where each token's ``_Info`` starts
        masks, firsts, seconds = flat[heads], flat[heads + 1], flat[heads + 2]
        lengths = sizes - _HEADER  # its feature keys
        # Each distinct (block, token), expanded to the token's feature keys.
        block_of, token_of = _block_tokens(ids, distinct, blocks, token_bits, STRIDE)
        per_entry = lengths[token_of]
        ends = np.cumsum(per_entry)
        offsets = (heads + _HEADER)[token_of] - (ends - per_entry)
        feature_keys = flat[np.repeat(offsets, per_entry) + np.arange(int(ends[-1]))]
        # With the pairs inside a block (both positions in it): distinct (feature, block), feature-major.
        positions = np.arange(size - 1)
        pair_local = ids[:-1] << token_bits | ids[1:]  # a pair's key less ``pair_base``
        pair_keys = pair_base + pair_local
        inside = positions % STRIDE != STRIDE - 1
        # Sorted in two parts (every feature key is below every pair key), each in 32 bits where it fits.
        token_codes = self._distinct_features(feature_keys, np.repeat(block_of, per_entry), pair_base, block_bits)
        pair_codes = _distinct(pair_local[inside], positions[inside] // STRIDE, 1 << 2 * token_bits, block_bits)
        codes = np.concatenate((token_codes, pair_codes + (pair_base << block_bits)))
        feature, block = codes >> block_bits, codes & ((1 << block_bits) - 1)
        pair_tokens = (firsts, seconds, token_bits, pair_base)
        # The pair across window w's middle (positions wS+S-1 and wS+S), counted below unless either block has it.
        across = pair_keys[STRIDE - 1 : windows * STRIDE : STRIDE] << block_bits | np.arange(windows)
        # Every pair's weight in one lookup: the pairs inside blocks (the codes after the tokens'), then those
        # across; in a long text each distinct pair once (sorted by pair: a pair in several blocks is one run).
        split = len(token_codes)
        inside_pairs = feature[split:]
        if len(inside_pairs) >= _DEDUPLICATED_FROM:
            new_pair = _firsts(inside_pairs)
            distinct_pairs = inside_pairs[new_pair]
            pair_weights = self._pair_weights(np.concatenate((distinct_pairs, across >> block_bits)), *pair_tokens)
            inside_weights = pair_weights[np.cumsum(new_pair) - 1]
        else:
            distinct_pairs = inside_pairs
            pair_weights = self._pair_weights(np.concatenate((distinct_pairs, across >> block_bits)), *pair_tokens)
            inside_weights = pair_weights[: len(inside_pairs)]
        weight = np.concatenate((self._weights64[np.minimum(feature[:split], len(self.vocabulary))], inside_weights))
        block_counts = np.bincount(block, minlength=blocks)
        block_sums = np.bincount(block, weights=weight, minlength=blocks)
        # A feature in blocks b and b+1 (once in window b): sorted codes one apart (a block + 1 never carries
        # into the feature's bits, every block being below 2**block_bits - 1).
        in_both = np.flatnonzero(codes[1:] == codes[:-1] + 1)
        shared = block[in_both]
        counts = block_counts[:-1] + block_counts[1:] - np.bincount(shared, minlength=blocks)[:windows]
        sums = block_sums[:-1] + block_sums[1:]
        sums -= np.bincount(shared, weights=weight[in_both], minlength=blocks)[:windows]
        added = ~(_contains(codes, across) | _contains(codes, across + 1))
        counts += added
        sums += np.where(added, pair_weights[len(distinct_pairs) :], 0.0)
        # Concepts: a window's are its two blocks' (bit masks ORed); each distinct mask's features once.
        block_masks = np.bitwise_or.reduceat(masks[ids], np.arange(0, size, STRIDE))
        window_masks = block_masks[:-1] | block_masks[1:]
        for mask in set(window_masks.tolist()) - {0}:
            features, weight_sum = self._concept_cost_of(mask)
            chosen = window_masks == mask
            counts[chosen] += features
            sums[chosen] += weight_sum
        logits: list[float] = (self.bias + sums / np.sqrt(np.maximum(counts, 1))).tolist()
        return logits

    def _short_logit(self, keys: _Keys, names: list[TokenKey], ids: list[int]) -> float:
        """The one window of a text of at most ``WINDOW`` tokens, from the tokens' cached keys.

        The same features as ``window_features``: each token's keys (``_infos``), each distinct pair
        ``b:x y`` looked up by its string, and the concepts of the tokens' bits (``_concept_cost_of``).
        The weights are float16 values, so their float64 sum is exact in any order, as in ``_logits_of``.
        """
        if not ids:
            return self.bias
        own: set[int] = set()
        mask = 0
        for info in self._infos(keys, names):
            values = array("q", info)
            mask |= values[0]
            own.update(values[_HEADER:])
        size, weights = len(self.vocabulary), self._weight_list
        known = [weights[key] for key in own if key < size]
        count = len(own)
        tokens = [_name(names[i]) for i in ids]
        vocabulary = self.vocabulary
        for pair in set(map("b:{} {}".format, tokens[:-1], tokens[1:])):
            count += 1
            index = vocabulary.get(pair)
            if index is not None:
                known.append(weights[index])
        if mask:
            features, weight_sum = self._concept_cost_of(mask)
            count += features
            if features:
                known.append(weight_sum)
        if not known:
            return self.bias
        return self.bias + sum(known) / math.sqrt(count)

    def _distinct_features(
        self, keys: NDArray[np.int64], blocks: NDArray[np.int64], bound: int, block_bits: int
    ) -> NDArray[np.int64]:
        """``_distinct`` of token features (``blocks`` in order): the known ones, most of them, by a radix sort.

        A known feature's key is its vocabulary index: with at most 2**16 of them, a stable sort of the
        keys as 16-bit integers (numpy's radix sort, ~5x faster here than sorting the 32-bit codes)
        leaves each key's entries in block order, which is the order of the codes.
        """
        size = len(self.vocabulary)
        if size > 1 << 16 or len(keys) < _RADIX_FROM:
            return _distinct(keys, blocks, bound, block_bits)
        known = keys < size
        # Codes first, then split and ordered: one gather per step instead of one for keys and one for blocks.
        codes = keys << block_bits
        codes |= blocks
        known_codes = codes[known]
        known_codes = known_codes[np.argsort(keys[known].astype(np.uint16), kind="stable")]
        unknown_codes = codes[~known]
        if bound << block_bits <= 1 << 32:
            narrow = unknown_codes.astype(np.uint32)
            narrow.sort()
            unknown_codes = narrow[_firsts(narrow)].astype(np.int64)
        else:
            unknown_codes.sort()
            unknown_codes = unknown_codes[_firsts(unknown_codes)]
        return np.concatenate((known_codes[_firsts(known_codes)], unknown_codes))

    def _infos(self, keys: _Keys, names: list[TokenKey]) -> list[_Info]:
        """Each token's ``_Info``, from the cache, or worked out (and cached) for the tokens not in it."""
        infos = list(map(keys.tokens.get, names))
        if None not in infos:
            return cast(list[_Info], infos)
        missing = [i for i, info in enumerate(infos) if info is None]
        tokens_missing = [_name(names[i]) for i in missing]
        if len(missing) >= _GRAMS_FROM:
            is_word = [_WORD_TOKEN.fullmatch(token) is not None for token in tokens_missing]
            if sum(is_word) >= _GRAMS_FROM:
                return self._word_infos(keys, names, infos, missing, tokens_missing, is_word)
        features = list(map(token_features, tokens_missing))
        everything = list(chain.from_iterable(features))
        known = list(map(self.vocabulary.get, everything))  # one C call for them all
        # A long token's own "w:" feature is numbered afresh and not kept: a client's 100 KB tokens must not
        # fill the caches (within this text each distinct token gets one number, all the counting needs).
        unknown = keys.unknown
        found = [
            k
            if k is not None
            else (unknown.get(f) or keys.unknown_key(f))
            if len(f) <= _MAX_KEPT_FEATURE
            else keys.beyond()
            for k, f in zip(known, everything, strict=True)
        ]
        packed = array("q", found).tobytes()  # every missing token's keys, cut per token below
        end = 0
        firsts, seconds, cached = self._firsts, self._seconds, keys.tokens
        for i, token, own in zip(missing, tokens_missing, features, strict=True):
            start, end = end, end + 8 * len(own)
            found_concepts = concepts([token]) if may_have_concepts(token) else None
            mask = sum(1 << self._concept_bit(c) for c in found_concepts) if found_concepts else 0
            info = array("q", (mask, firsts.get(token, -1), seconds.get(token, -1))).tobytes() + packed[start:end]
            infos[i] = info
            if len(token) <= _MAX_GRAM_CHARS:
                cached[names[i]] = info
        return cast(list[_Info], infos)  # no None left

    def _word_infos(
        self,
        keys: _Keys,
        names: list[TokenKey],
        infos: list[_Info | None],
        missing: list[int],
        tokens_missing: list[str],
        is_word: list[bool],
    ) -> list[_Info]:
        """``_infos`` for the missing tokens, the word tokens' trigrams keyed at once with numpy.

        A word token's features are ``token_features``: ``w:`` and its word, then the trigrams of
        ``<token[:64]>`` in order; a trigram's key is ``self._gram_keys`` of its number (the vocabulary
        index, or the number ``_Keys.unknown_key`` gives it), so the keys are the ones ``_infos`` finds.
        Other tokens (symbols, non-ASCII) take ``token_features`` as there.
        """
        words = [token[:_MAX_GRAM_CHARS] for token, word in zip(tokens_missing, is_word, strict=True) if word]
        marked = np.frombuffer("".join(f"<{word}>" for word in words).encode("ascii"), dtype=np.uint8)
        codes = _GRAM_BYTES[marked]
        grams = (codes[:-2] * len(_GRAM_CHARS) + codes[1:-1]) * len(_GRAM_CHARS) + codes[2:]
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))  # each word's trigrams
        starts = np.cumsum(lengths + 2) - (lengths + 2)  # where each "<word>" starts
        total = int(lengths.sum())
        within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        gram_keys = self._gram_keys[grams[np.repeat(starts, lengths) + within]].tobytes()
        vocabulary, unknown = self.vocabulary, keys.unknown
        firsts, seconds, cached = self._firsts, self._seconds, keys.tokens
        end = 0
        for i, token, word in zip(missing, tokens_missing, is_word, strict=True):
            if word:
                own = f"w:{token}"
                key = vocabulary.get(own)
                if key is None:
                    long_word = len(own) > _MAX_KEPT_FEATURE  # numbered afresh, not kept (as ``_infos`` does)
                    key = keys.beyond() if long_word else unknown.get(own) or keys.unknown_key(own)
                start, end = end, end + 8 * min(len(token), _MAX_GRAM_CHARS)
                body = _pack_key(key) + gram_keys[start:end]
            else:
                body = self._keys_of(keys, token_features(token))
            found_concepts = concepts([token]) if may_have_concepts(token) else None
            mask = sum(1 << self._concept_bit(c) for c in found_concepts) if found_concepts else 0
            info = _pack_header(mask, firsts.get(token, -1), seconds.get(token, -1)) + body
            infos[i] = info
            if len(token) <= _MAX_GRAM_CHARS:
                cached[names[i]] = info
        return cast(list[_Info], infos)  # no None left

    def _keys_of(self, keys: _Keys, features: list[str]) -> bytes:
        """The features' keys as int64 bytes (as ``_infos`` numbers them)."""
        vocabulary, unknown = self.vocabulary, keys.unknown
        found = [
            k
            if (k := vocabulary.get(f)) is not None
            else (unknown.get(f) or keys.unknown_key(f))
            if len(f) <= _MAX_KEPT_FEATURE
            else keys.beyond()
            for f in features
        ]
        return array("q", found).tobytes()

    def _pair_weights(
        self, keys: NDArray[np.int64], firsts: NDArray[np.int64], seconds: NDArray[np.int64], bits: int, base: int
    ) -> NDArray[np.float64]:
        """The weight of each pair key ``base + (first << bits | second)`` (token ids of this text), 0 if unknown."""
        local = keys - base
        first, second = local >> bits, local & ((1 << bits) - 1)
        first, second = firsts[first], seconds[second]
        maybe = np.flatnonzero((first >= 0) & (second >= 0))
        index = np.full(len(keys), -1, dtype=np.int64)  # -1: the weight table's last entry, 0
        index[maybe] = self._pairs.lookup(first[maybe] * len(self._seconds) + second[maybe])
        weights: NDArray[np.float64] = self._weights64[index]
        return weights

    def _concept_bit(self, concept: str) -> int:
        """The concept's bit in a window's concept mask (given out once, under a lock)."""
        bit = self._concept_bits.get(concept)
        if bit is None:
            with self._concept_lock:
                bit = self._concept_bits.setdefault(concept, len(self._concept_bits))
        return bit

    def _concept_cost_of(self, mask: int) -> tuple[int, float]:
        """How many ``k:`` features a window with these concept bits has, and their weights' sum."""
        found = self._concept_cost.get(mask)
        if found is None:
            with self._concept_lock:  # not iterated while another thread adds a concept
                names = {c for c, bit in self._concept_bits.items() if mask >> bit & 1}
            features = features_of(names)
            ids = sorted(self.vocabulary[f] for f in features if f in self.vocabulary)
            found = self._concept_cost[mask] = (len(features), float(self._weights64[ids].sum()))
        return found

    def _logits_of(self, windows: list[set[str]]) -> list[float]:
        """Window logits from feature-string sets (the reference path: short texts, and the tests)."""
        vocabulary, weights = self.vocabulary, self.weights
        out = []
        for features in windows:
            # Sorted, and summed in float64: the same logit whatever the set's (hash-seeded) order.
            ids = sorted(vocabulary[f] for f in features if f in vocabulary)
            if not ids:
                out.append(self.bias)
                continue
            out.append(self.bias + float(weights[ids].sum(dtype=np.float64)) / math.sqrt(len(features)))
        return out

    def logit(self, text: str) -> float:
        """The highest window logit."""
        return max(self.window_logits(text), default=self.bias)

    def score(self, text: str) -> tuple[float, float]:
        """(decision score, calibrated probability) of the text's most suspicious window."""
        logit = self.logit(text)
        return self.calibration.decision(logit), self.calibration.probability(logit)


@cache
def shipped_model() -> InjectionModel:
    """The model shipped with opsgate, loaded once per process (read-only after loading)."""
    return InjectionModel.load()
