"""The name recogniser's numpy token bounds (``pii_tokens.token_spans``) are what ``TOKEN.finditer`` finds, and
its scores equal those of the plain token list (``findall``, a code per token) on the same odd inputs."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

from opsgate.guard.pii_fast import _CANDIDATE_AT, _ROW_WIDTH, LABELS, FastNames, load
from opsgate.guard.pii_tokens import TOKEN, token_spans

_PIECES = [
    "Anna", " ", "\n", "Smith", "the", "The", "O'Neil", "M\u00fcller", "\u00c9ric", "\u05e9\u05dc\u05d5\u05dd",
    "\u0627\u0644\u0642\u0627\u0647\u0631\u0629", "\u200f", "\u202e", "\x00", "\ud800", "\udc00", "\ud83d\ude00",
    "\U0001f600", "-", "'", "\u2019s", "&", ".", "@", "Dr.", "\u24b6", "\u01c5", "\u2167", "\u3000", "\u00a0",
    "\u2028", "\x1c", "\x85", "1", "\u0663", "\uff11", "_", "van", "Bank", "of", "\t", "\u00df", "\u03a3\u0391",
    "\u0130", "\u1e9e", "x" * 5,
]  # fmt: skip


def _texts(seed: int, count: int = 600) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 60))) for _ in range(count)]


_EDGES = [
    "", " ", "\n\n", "A", " A", "A ", "\x00A\x00", "\ud800", "A\udc00B", "\u202eAnna Smith\u202c",
    "\u05e9\u05dc\u05d5\u05dd Anna", "1" * 32_768, "\u0663" * 4096, "Anna " * 6_600, " " * 3000 + "Anna",
]  # fmt: skip


def _plain_spans(text: str) -> list[tuple[int, int, bool]]:
    return [(m.start(), m.end(), m.group().lstrip()[:1].isupper()) for m in TOKEN.finditer(text)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_token_spans_are_what_finditer_finds(seed: int) -> None:
    # Every length around 2,048 too (the size where the other numpy shortcuts switch paths).
    sized = ["".join(random.Random(size).choice(_PIECES) for _ in range(size))[:size] for size in (2047, 2048, 2049)]
    for text in [*_EDGES, *sized, *_texts(seed)]:
        starts, ends, capital = token_spans(text)
        found = list(zip(starts.tolist(), ends.tolist(), capital.tolist(), strict=True))
        assert found == _plain_spans(text), ascii(text[:200])


def test_every_code_point_is_classed_as_re_classes_it() -> None:
    """One token per code point between two letters: the classes of all of Unicode (surrogates included)."""
    text = "".join(f"a{chr(code)}" for code in range(0x80, sys.maxunicode + 1, 7))
    for low in range(0, len(text), 65_536):
        part = text[low : low + 65_536]
        starts, ends, capital = token_spans(part)
        assert list(zip(starts.tolist(), ends.tolist(), capital.tolist(), strict=True)) == _plain_spans(part)


def _plain_scores(model: FastNames, text: str) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """``scores`` as the tree before ``token_spans`` computed it: ``findall``, then each token's code."""
    tokens = TOKEN.findall(text)
    if not tokens:
        return [], np.zeros((0, len(LABELS)), dtype=np.float32)
    local: dict[str, int] = {}
    codes = np.array([local.setdefault(token, len(local)) for token in tokens], dtype=np.intp)
    distinct = [*local, "", "<nl>"]
    empty, newline = len(distinct) - 2, len(distinct) - 1
    table = np.frombuffer(b"".join(model._row(token) for token in distinct), dtype=np.int32).reshape(-1, _ROW_WIDTH)
    at = np.flatnonzero(table[codes, _CANDIDATE_AT] == 1)  # capitalised, and not a function word
    if not at.size:
        return [], np.zeros((0, len(LABELS)), dtype=np.float32)
    before = np.concatenate(([empty, empty], codes[:-1]))  # before[i + 1]: the token before token i
    after = np.concatenate((codes[1:], [empty, empty]))
    ends = np.cumsum(np.array([len(token) for token in distinct])[codes])
    return model._scored(table, codes[at], before[at + 1], before[at], after[at], after[at + 1], ends[at], newline)


@pytest.mark.parametrize("seed", [4, 5])
def test_scores_equal_the_plain_token_list(seed: int) -> None:
    model = load()
    for text in [*_EDGES, *_texts(seed, 400)]:
        spans, logits = model.scores(text)
        plain_spans, plain_logits = _plain_scores(model, text)
        assert spans == plain_spans, ascii(text[:200])
        assert logits.tobytes() == plain_logits.tobytes(), ascii(text[:200])
