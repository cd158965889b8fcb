"""Numpy steps of the injection model's fast path: numbering values by hashing, distinct codes, blocks of tokens.

Exact replacements of a sort and a ``set`` (the logits stay bit-identical: ``bench/injection_parity.py``),
chosen for the cost on this machine's numpy (``docs/benchmarks.md``, "Thirteenth session: injection scanner
cost"); kept apart from the model, which only calls them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# Two multiplicative (Fibonacci-style) hashes of 64-bit values: odd constants, the top bits of the product kept.
MIXES = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))


def group(values: NDArray[np.uint64]) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """The distinct ``values`` (in no set order) and each value's index among them, by hashing with numpy.

    Sorting 5,000 64-bit values (a 25 KB text's short tokens) costs about twice as much here. Each round,
    every value still pending writes its position into its hash slot; the one position left there stands
    for its value, and each value equal to its value is settled by it (equal values share a slot, so all
    of them settle in the same round, on the same position). A value that lost its slot to another value
    tries the next hash; the few that two rounds leave (or a client's crafted collisions) are sorted.
    The token ids are only told apart, so their order does not matter.
    """
    size = len(values)
    bits = max(4, (2 * size).bit_length())  # at most half the slots used
    table = np.empty(1 << bits, dtype=np.intp)  # never read before written: no fill needed
    standing = np.empty(size, dtype=np.intp)  # the position that stands for each value
    pending = np.arange(size)
    shift = np.uint64(64 - bits)
    for mix in MIXES:
        part = values[pending]
        slots = ((part * mix) >> shift).astype(np.intp)  # (the product wraps around: that is the hash)
        table[slots] = pending
        won = table[slots]
        settled = values[won] == part
        standing[pending[settled]] = won[settled]
        pending = pending[~settled]
        if not len(pending):
            break
    if len(pending):
        order = pending[np.argsort(values[pending], kind="stable")]
        first = firsts(values[order])
        standing[order] = order[np.flatnonzero(first)][np.cumsum(first) - 1]
    stands = np.flatnonzero(standing == np.arange(size))  # one position per distinct value
    number = np.empty(size, dtype=np.int64)
    number[stands] = np.arange(len(stands))
    return values[stands], number[standing]


def firsts(ordered: NDArray[np.integer]) -> NDArray[np.bool_]:
    """Where each run of equal values in a sorted array starts."""
    out = np.empty(len(ordered), dtype=np.bool_)
    out[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=out[1:])
    return out


def distinct_codes(
    keys: NDArray[np.int64], blocks: NDArray[np.int64], bound: int, block_bits: int
) -> NDArray[np.int64]:
    """The distinct ``key << block_bits | block`` codes, sorted (every key below ``bound``).

    Sorted as 32-bit integers when they fit: numpy sorts those in about half the time of 64-bit ones.
    """
    if bound << block_bits <= 1 << 32:
        narrow = keys.astype(np.uint32)
        narrow <<= block_bits
        narrow |= blocks.astype(np.uint32)
        narrow.sort()
        return narrow[firsts(narrow)].astype(np.int64)
    codes = keys << block_bits | blocks
    codes.sort()
    return codes[firsts(codes)]


def block_tokens(
    ids: NDArray[np.int64], distinct: int, blocks: int, token_bits: int, stride: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each distinct (block, token) of a text whose tokens are ``ids``, by block then token: (blocks, tokens).

    With fewer than 2**16 - 1 distinct tokens, each block's ``stride`` ids are sorted as 16-bit integers in a row
    of their own (short rows sort in a few vector steps; one sort of all the 32-bit codes took ~3x
    longer); the last row is padded with the largest 16-bit value, which no id reaches.
    """
    size = len(ids)
    if distinct >= (1 << 16) - 1:
        codes = distinct_codes(np.arange(size) // stride, ids, blocks, token_bits)
        return codes >> token_bits, codes & ((1 << token_bits) - 1)
    rows = np.full(blocks * stride, (1 << 16) - 1, dtype=np.uint16)
    rows[:size] = ids
    rows.reshape(blocks, stride).sort(axis=1)
    first = np.empty(len(rows), dtype=np.bool_)
    first[:1] = True
    np.not_equal(rows[1:], rows[:-1], out=first[1:])
    first[::stride] = True  # a block's first token is new to its block
    first[size:] = False  # the padding, sorted to the end of the last row
    kept = np.flatnonzero(first)
    return kept // stride, rows[kept].astype(np.int64)


def contains(ordered: NDArray[np.int64], values: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Whether each of ``values`` is in the sorted, non-empty array ``ordered``."""
    where = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    found: NDArray[np.bool_] = ordered[where] == values
    return found
