"""How much of a system prompt an answer repeats, in time linear in the answer even as a stream grows.

A stream's ``whole``-scope scan hands the scanner all text released so far, every window: reading
it all again each time is quadratic (30 KB prompt, 32 KB answer: 66 s). Here the answer is read
once: the state after each ``BLOCK`` characters is kept, keyed by a digest of the prompt and of the
text up to there (never the text), and a later call resumes from the latest state whose prefix its
text shares, reading only what follows. Whether a prompt sentence was found never goes back (text
once released stays released), so resuming gives what a full read gives.

Two matchers, the same score (the share of the prompt's sentence characters found in the answer):

- short prompts (``FUZZY_MAX_CHARS``, ``FUZZY_MAX_PIECES``): a sentence is found where
  ``fuzz.partial_ratio`` ≥ 85, as before; each new piece of text is compared together with the
  last ``len(sentence) - 1`` characters before it (every alignment that touches the new text);
- longer prompts: word ``SHINGLE``-grams, hashed once per prompt; a sentence is found when
  ``COVERED`` of its word characters lie in grams seen in the answer (one changed word uncovers
  one word, as partial_ratio's 85 tolerates small edits).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from rapidfuzz import fuzz

from opsgate.guard.base import BoundedLru

SENTENCE = re.compile(r"(?<=[.!?;:])\s+|\n+")
_WORD = re.compile(r"\w+")
_WORD_CHAR = re.compile(r"\w")
MIN_PIECE = 12  # shorter sentences are not counted
MAX_PIECE = 100  # longer ones are compared in pieces of this size
RATIO = 85
FUZZY_MAX_CHARS = 4096
FUZZY_MAX_PIECES = 64
SHINGLE = 3
COVERED = 0.85
BLOCK = 128  # answer characters between kept states (each call re-reads at most this much)
MAX_PROMPT_CHARS = 64 * 1024  # past this only the prompt's start is compared (bounds index and states)
_RESUME_TRIES = 32  # kept states looked for, latest first (a stream's window spans a few blocks)


def _chunks(sentence: str) -> list[str]:
    """A sentence in pieces of at most ``MAX_PIECE`` characters, cut at spaces.

    partial_ratio's cost grows steeply past ~100 characters (1,000: ~25 ms a call), and a prompt
    without sentence ends would be one piece; a long sentence's pieces are each judged, their
    characters counted as the sentence's would be.
    """
    if len(sentence) <= MAX_PIECE:
        return [sentence]
    out: list[str] = []
    rest = sentence
    while len(rest) > MAX_PIECE:
        cut = rest.rfind(" ", MIN_PIECE, MAX_PIECE + 1)
        cut = cut if cut > 0 else MAX_PIECE
        out.append(rest[:cut])
        rest = rest[cut:].lstrip()
    if len(rest) >= MIN_PIECE or not out:
        out.append(rest)
    elif rest:
        out[-1] = f"{out[-1]} {rest}"
    return out


def normalize(text: str) -> str:
    """Lower case, runs of whitespace as one space (how prompt and answer are compared)."""
    return " ".join(text.lower().split())


@dataclass(slots=True)
class _State:
    """What reading the answer up to ``pos`` found. Kept states are shared: copy before changing.

    Compact (flags and bitsets, no answer text but a word or two and ≤ ``MAX_PIECE`` normalized
    characters): thousands are kept.
    """

    pos: int
    found: bytearray  # per piece: 1 when found
    found_chars: int = 0
    # fuzzy: the normalized answer's length and its last characters; whether whitespace is pending
    norm_len: int = 0
    tail: str = ""
    space: bool = False
    # shingles: a word cut at the end of the text read, the last words, and bitsets over the
    # prompt's word ids (covered) and gram ids (met), word characters covered per piece
    carry: str = ""
    words: tuple[str, ...] = ()
    covered: bytearray = field(default_factory=bytearray)
    met: bytearray = field(default_factory=bytearray)
    chars: bytearray = field(default_factory=bytearray)

    def copy(self) -> _State:
        return _State(
            self.pos,
            bytearray(self.found),
            self.found_chars,
            self.norm_len,
            self.tail,
            self.space,
            self.carry,
            self.words,
            bytearray(self.covered),
            bytearray(self.met),
            bytearray(self.chars),
        )


class PromptIndex:
    """A system prompt prepared once: its sentences (in pieces) and, for long prompts, their word grams."""

    def __init__(self, prompt: str, key: bytes) -> None:
        self.key = key
        sentences = [normalize(s) for s in SENTENCE.split(prompt[:MAX_PROMPT_CHARS])]
        self.pieces = [c for p in sentences if len(p) >= MIN_PIECE for c in _chunks(p)]
        self.fuzzy = len(prompt) <= FUZZY_MAX_CHARS and len(self.pieces) <= FUZZY_MAX_PIECES
        if not self.fuzzy:
            self.pieces = [p for p in self.pieces if _WORD.search(p)]  # grams need words
        self.total = sum(len(p) for p in self.pieces)
        self.overlap = max((len(p) for p in self.pieces), default=1) - 1
        self.grams: dict[tuple[str, ...], int] = {}  # gram -> gram id
        self.hits: list[list[tuple[int, int]]] = []  # by gram id: (piece, its first word id)
        self.sizes: tuple[int, ...] = ()
        self.word_chars = bytearray()  # by word id (a piece is at most MAX_PIECE + MIN_PIECE long)
        self.piece_chars: list[int] = []  # word characters per piece
        if not self.fuzzy:
            self._index_grams()

    def _index_grams(self) -> None:
        sizes = {SHINGLE}
        for number, piece in enumerate(self.pieces):
            words = _WORD.findall(piece)
            first = len(self.word_chars)
            self.word_chars.extend(min(len(w), 255) for w in words)
            self.piece_chars.append(sum(self.word_chars[first:]))
            size = min(SHINGLE, len(words))
            if not size:
                continue
            sizes.add(size)
            for start in range(len(words) - size + 1):
                gram = tuple(words[start : start + size])
                gram_id = self.grams.setdefault(gram, len(self.grams))
                if gram_id == len(self.hits):
                    self.hits.append([])
                self.hits[gram_id].append((number, first + start))
        self.sizes = tuple(sorted(sizes))

    def start(self) -> _State:
        """The state before any of the answer is read."""
        if self.fuzzy:
            return _State(0, bytearray(len(self.pieces)))
        return _State(
            0,
            bytearray(len(self.pieces)),
            covered=bytearray((len(self.word_chars) + 7) // 8),
            met=bytearray((len(self.grams) + 7) // 8),
            chars=bytearray(len(self.pieces)),
        )

    # ---- reading more of the answer
    def feed(self, state: _State, raw: str) -> None:
        """Read ``raw``, the answer's text after ``state.pos`` (``state`` is changed)."""
        state.pos += len(raw)
        if self.fuzzy:
            self._feed_fuzzy(state, raw)
        else:
            self._feed_grams(state, raw, flush=False)

    def _found(self, state: _State, number: int) -> None:
        state.found[number] = 1
        state.found_chars += len(self.pieces[number])

    def _feed_fuzzy(self, state: _State, raw: str) -> None:
        added = normalize(raw)
        if not added:
            state.space = state.space or bool(raw)
            return
        if state.norm_len and (state.space or raw[0].isspace()):
            added = " " + added
        window = state.tail + added
        state.norm_len += len(added)
        for number, piece in enumerate(self.pieces):
            if state.found[number] or len(window) < len(piece):
                continue
            # Every alignment of the piece that touches the new text; those before were read already.
            near = window[max(0, len(window) - len(added) - len(piece) + 1) :]
            if fuzz.partial_ratio(piece, near, score_cutoff=RATIO) >= RATIO:
                self._found(state, number)
        state.tail = window[-self.overlap :] if self.overlap else ""
        state.space = raw[-1].isspace()

    def _feed_grams(self, state: _State, raw: str, flush: bool) -> None:
        text = (state.carry + raw).lower()
        words = _WORD.findall(text)
        state.carry = ""
        if words and not flush and _WORD_CHAR.match(text[-1:]):
            state.carry = words.pop()  # may go on in the next piece of text
        if not words:
            return
        seq = (*state.words, *words)
        old = len(state.words)
        met = state.met
        for size in self.sizes:
            for start in range(max(old - size + 1, 0), len(seq) - size + 1):
                gram_id = self.grams.get(seq[start : start + size])
                if gram_id is None or met[gram_id >> 3] & (1 << (gram_id & 7)):
                    continue  # not the prompt's, or met before (a gram covers the same words each time)
                met[gram_id >> 3] |= 1 << (gram_id & 7)
                for number, first in self.hits[gram_id]:
                    self._cover(state, number, first, size)
        state.words = seq[-(SHINGLE - 1) :]

    def _cover(self, state: _State, number: int, first: int, size: int) -> None:
        covered = state.covered
        for word in range(first, first + size):
            bit = 1 << (word & 7)
            if not covered[word >> 3] & bit:
                covered[word >> 3] |= bit
                chars = state.chars[number] = state.chars[number] + self.word_chars[word]
                if not state.found[number] and chars >= COVERED * self.piece_chars[number]:
                    self._found(state, number)

    # ---- the score
    def found_chars(self, state: _State) -> int:
        """Characters of the prompt's pieces found by ``state`` (which may be changed: pass a copy)."""
        if not self.fuzzy:
            if state.carry:
                self._feed_grams(state, "", flush=True)
            return state.found_chars
        found = state.found_chars
        # An answer still shorter than a piece: compared whole (partial_ratio aligns it in the piece).
        for number, piece in enumerate(self.pieces):
            short = not state.found[number] and 0 < state.norm_len < len(piece)
            if short and fuzz.partial_ratio(piece, state.tail, score_cutoff=RATIO) >= RATIO:
                found += len(piece)
        return found


# Prepared prompts: short ones are a few KB each; a 64 KB prompt's grams take ~5 MB, so few are kept.
_indexes: BoundedLru[bytes, PromptIndex] = BoundedLru(128)
_large_indexes: BoundedLru[bytes, PromptIndex] = BoundedLru(8)
# Kept states: ≤ ~4 KB each (a 64 KB prompt's bitsets), most far less.
_states: BoundedLru[bytes, _State] = BoundedLru(4096)


def index_for(prompt: str) -> PromptIndex:
    """The prompt's index, built once per distinct prompt (cached by digest)."""
    key = hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    cache = _indexes if len(prompt) <= FUZZY_MAX_CHARS else _large_indexes
    index = cache.get(key)
    if index is None:
        index = PromptIndex(prompt, key)
        cache.put(key, index)
    return index


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _prefix_keys(index: PromptIndex, text: str) -> dict[int, bytes]:
    """Keys of ``text``'s prefixes at the last ``_RESUME_TRIES`` block ends (by block number), in one pass.

    A digest of the prompt and the prefix: equal keys mean the same prompt and the same text so far.
    Only the last few block ends are kept or looked for: a stream's next call reads from there.
    """
    last = len(text) // BLOCK
    lowest = max(last - _RESUME_TRIES, 0)
    running = hashlib.blake2b(_utf8(text[: lowest * BLOCK]), digest_size=16, key=index.key)
    keys: dict[int, bytes] = {}
    for block in range(lowest + 1, last + 1):
        running.update(_utf8(text[(block - 1) * BLOCK : block * BLOCK]))
        keys[block] = running.copy().digest()
    return keys


def leaked_chars(prompt: str, answer: str, final: bool) -> tuple[int, int]:
    """(characters of the prompt's sentences found in ``answer``, all of them).

    Resumes from the state kept for the longest prefix of ``answer`` read before (a stream's
    previous call) and reads only the rest. ``final``: the answer is complete (nothing is kept).
    Otherwise the states at the new block ends are kept for the next call.
    """
    index = index_for(prompt)
    if not index.total:
        return 0, 0
    keys = _prefix_keys(index, answer)
    state = None
    for block in sorted(keys, reverse=True):
        kept = _states.get(keys[block])
        if kept is not None:
            state = kept.copy()
            break
    if state is None:
        state = index.start()
    if not final:
        while state.pos + BLOCK <= len(answer):
            index.feed(state, answer[state.pos : state.pos + BLOCK])
            key = keys.get(state.pos // BLOCK)
            if key is not None:
                _states.put(key, state.copy())
    index.feed(state, answer[state.pos :])
    return index.found_chars(state), index.total
