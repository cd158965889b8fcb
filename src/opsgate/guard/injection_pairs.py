"""The injection model's known word pairs as an open-addressing hash table, looked up with numpy.

A text's pairs are looked up all at once, slot by slot from each one's hash (most settle at the first
slot), instead of the ~16 steps of a binary search over the sorted codes (~0.3 ms per 25 KB on a loaded
machine, most of it cache misses). Linear probing without wrapping around: a code sits at
the first free slot from its hash on, and the table is made big enough that every code sits within
``_WINDOW`` slots of its hash, so a code that is not in its window is not in the table. Written once,
at load; only read after.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

_EMPTY = -1  # a free slot (every entry is >= 0)
_WINDOW = 8  # slots read per lookup: 64 bytes
# Codes per lookup from which it goes slot by slot (fewer: whole windows, in fewer numpy calls than the steps).
_STEPPED_FROM = 512
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing


class PairTable:
    """Maps non-negative integer codes to integer values; an absent code maps to -1."""

    def __init__(self, codes: NDArray[np.int64], values: NDArray[np.int64]) -> None:
        """``codes``: distinct, non-negative; ``values[i]`` is ``codes[i]``'s."""
        # 32-bit codes where they fit: the window read for each lookup is then half a cache line.
        self._dtype = np.int32 if int(codes.max(initial=0)) < 2**31 else np.int64
        bits = max(4, (2 * len(codes)).bit_length())  # at most half full
        while not self._build(codes, values, bits):
            bits += 1  # a code landed _WINDOW or more slots past its hash: a sparser table

    def _build(self, codes: NDArray[np.int64], values: NDArray[np.int64], bits: int) -> bool:
        """Fill a table of ``2**bits`` slots (and ``_WINDOW - 1`` past the end); False if a code lands too far."""
        self._bits = bits
        table = np.full((1 << bits) + _WINDOW - 1, _EMPTY, dtype=self._dtype)
        self._values = np.full(len(table), -1, dtype=np.int64)
        home = self._hash(codes)
        slots = home.copy()
        pending = np.arange(len(codes))
        while len(pending):
            if int((slots[pending] - home[pending]).max()) >= _WINDOW:
                return False
            # Each pending code tries its slot; of several trying one free slot, the first takes it.
            tried = slots[pending]
            free = table[tried] == _EMPTY
            taken, first = np.unique(tried[free], return_index=True)
            winners = pending[free][first]
            table[taken] = codes[winners]
            self._values[taken] = values[winners]
            placed = np.zeros(len(codes), dtype=np.bool_)
            placed[winners] = True
            pending = pending[~placed[pending]]
            slots[pending] += 1  # the slot was taken: the next one
        self._table = table
        # Row h: the _WINDOW slots from h on (a read-only view of the table, no copy).
        self._windows = as_strided(table, shape=(1 << bits, _WINDOW), strides=(table.itemsize,) * 2, writeable=False)
        return True

    def _hash(self, codes: NDArray[np.int64]) -> NDArray[np.int64]:
        mixed = codes.astype(np.uint64) * _GOLDEN  # wraps around: that is the hash
        return (mixed >> np.uint64(64 - self._bits)).astype(np.int64)

    def lookup(self, codes: NDArray[np.int64]) -> NDArray[np.int64]:
        """Each code's value, -1 where the code is not in the table (``codes`` non-negative).

        Slot by slot from each code's hash, for the codes not settled yet: a code is found, or a free slot
        says it is absent (a code sits at the first slot that was free from its hash on, and no slot is
        freed after, so none lies past a free one). The table is at most half full: most codes settle at
        the first slot, and one gather of one slot per code costs half of reading whole windows (numpy's
        fancy indexing of the overlapping window view copies row by row).
        """
        if len(codes) < _STEPPED_FROM:
            return self._lookup_windows(codes)
        out = np.full(len(codes), -1, dtype=np.int64)
        where = np.arange(len(codes))
        slots = self._hash(codes)
        for _ in range(_WINDOW):  # a code in the table sits within its window
            seen = self._table[slots]
            found = seen == codes
            out[where[found]] = self._values[slots[found]]
            going = np.flatnonzero(~found & (seen != _EMPTY))
            if not len(going):
                break
            where, slots, codes = where[going], slots[going] + 1, codes[going]
        return out

    def _lookup_windows(self, codes: NDArray[np.int64]) -> NDArray[np.int64]:
        """``lookup`` in a fixed number of numpy calls: each code's whole window read and compared at once."""
        homes = self._hash(codes)
        # Where each code sits in its window, if it does (a free slot's -1 is never a code; a code is in one slot).
        hits = np.flatnonzero(self._windows[homes] == codes[:, None])
        rows = hits // _WINDOW
        out = np.full(len(codes), -1, dtype=np.int64)
        out[rows] = self._values[homes[rows] + hits % _WINDOW]
        return out
