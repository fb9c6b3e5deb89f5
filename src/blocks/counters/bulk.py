"""Bulk sketch updates: hash a batch in one pass, then update registers and cells with numpy.

Theory of operation. Adding items one at a time costs a few Python calls and some 64-bit
arithmetic per item, and that overhead, not the hashing, is what makes a Python sketch slower
than a compiled one. A batch is cheaper in three steps:

1. **Encode** every item to bytes with ``map(str.encode, ...)`` (C speed when all items are
   ``str``, which is the common case; any other type falls back to the sketch's own check, so
   bad input raises the same ``InvalidArgument`` as the single-item path).
2. **Hash** with ``map(xxhash..._digest, encoded)``: still one xxh3 call per item, as xxhash
   has no batch API, but without a Python frame per item, and without the seed argument when
   the seed is 0 (xxhash's default; passing it costs about a tenth more per call). The digests
   (big-endian bytes) are joined and read by numpy as big-endian 64-bit words in one step,
   which is exactly ``int.from_bytes(digest, "big")`` and cheaper than turning a Python int
   per item into a uint64.
3. **Update** with ufuncs: HyperLogLog registers with ``np.maximum.at`` (the register-wise max
   is order-independent, so the result is identical to one-by-one adds); count-min cells with
   ``np.add.at`` on an int64 view of each of the sketch's rows (addition commutes, so again
   identical). Count-min columns of a power-of-two width are a mask of wrapping uint64
   arithmetic, with no division.

Every index is computed exactly as the single-item path computes it (see each sketch), so the
registers and cells after a bulk add equal those after the same items added one by one; the
tests compare them. Batches are cut into chunks of ``CHUNK_ITEMS_MAX`` so that temporary
arrays stay bounded whatever the input's length.

numpy is an optional dependency of ``blocks`` (the ``search`` extra). It is imported lazily,
on the first bulk add; without it ``numpy_or_none`` returns ``None`` and the sketches fall back
to their one-by-one loops, with the same results.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from itertools import islice, repeat
from types import ModuleType
from typing import Any

import xxhash

__all__ = [
    "CHUNK_ITEMS_MAX",
    "chunks",
    "count_min_columns",
    "hll_indices_and_ranks",
    "numpy_or_none",
]

CHUNK_ITEMS_MAX = 1 << 16
"""Items hashed and applied per numpy pass (bounds the temporary arrays to a few MiB)."""

_LOW_32 = 0xFFFFFFFF


@functools.cache
def numpy_or_none() -> ModuleType | None:
    """The numpy module, or ``None`` when it is not installed (the pure paths are used)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def chunks(items: Iterable[Any], size: int = CHUNK_ITEMS_MAX) -> Iterator[list[Any]]:
    """``items`` as lists of at most ``size`` items, in order (a list that short is passed
    through as it is, not copied)."""
    if type(items) is list and len(items) <= size:
        if items:
            yield items
        return
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _hashed(
    hash_function: Callable[..., bytes],
    items: list[Any],
    seed: int,
    as_bytes: Callable[[Any], bytes],
) -> bytes:
    """The digests of ``items``, joined: one xxh3 call per item, without a Python frame.

    Items are encoded with ``str.encode`` at C speed when all are str; otherwise
    (``str.encode`` raises TypeError on the first non-str) encoded again, each by
    ``as_bytes``, which raises the sketch's own error for a bad item. Digests (big-endian
    bytes) are joined and read by numpy in one step, which is cheaper than turning each
    64-bit int into a uint64; the seed is left out when it is 0 (xxhash's default), which
    makes each call cheaper still."""
    try:
        if seed == 0:
            return b"".join(map(hash_function, map(str.encode, items)))
        return b"".join(map(hash_function, map(str.encode, items), repeat(seed)))
    except TypeError:
        encoded = [as_bytes(item) for item in items]
        return b"".join(map(hash_function, encoded, repeat(seed)))


def _bit_length(np: Any, values: Any, bits: int) -> Any:
    """Exact bit lengths of uint64 values below ``2**bits``: float64 holds every integer
    below 2**53 exactly, so one conversion does below that, 32-bit halves above."""
    if bits <= 53:
        return np.frexp(values.astype(np.float64))[1]
    high = values >> np.uint64(32)
    low = values & np.uint64(_LOW_32)
    high_bits = np.frexp(high.astype(np.float64))[1]
    low_bits = np.frexp(low.astype(np.float64))[1]
    return np.where(high > 0, high_bits + 32, low_bits)


def hll_indices_and_ranks(
    np: Any, items: list[Any], seed: int, precision: int, as_bytes: Callable[[Any], bytes]
) -> Any:
    """(register index, rank) arrays for ``items``, as ``HyperLogLog.add`` computes them:
    index = top ``precision`` bits of xxh3-64, rank = ``64 - precision`` - bit length of
    the remaining bits + 1."""

    digests = _hashed(xxhash.xxh3_64_digest, items, seed, as_bytes)
    hashes = np.frombuffer(digests, dtype=">u8").astype(np.uint64)
    shift = 64 - precision
    indices = (hashes >> np.uint64(shift)).astype(np.intp)
    rest = hashes & np.uint64((1 << shift) - 1)
    ranks = (shift + 1 - _bit_length(np, rest, shift)).astype(np.uint8)
    return indices, ranks


def count_min_columns(
    np: Any, items: list[Any], seed: int, width: int, depth: int, as_bytes: Callable[[Any], bytes]
) -> Any:
    """A ``depth x len(items)`` array: the column each item raises in each row (row by row,
    so that each row's columns are contiguous).

    ``CountMinSketch`` puts row ``r`` at column ``(first + r * second) % width`` in unbounded
    integers, with ``first`` the low and ``second | 1`` the high 64 bits of xxh3-128. When
    ``width`` is a power of two, uint64 arithmetic that wraps modulo 2**64 gives the same
    column (2**64 is a multiple of ``width``), and ``& (width - 1)`` is the remainder: no
    division at all. Otherwise both are reduced modulo ``width`` first, which keeps every
    product below ``depth * width`` (at most 2**24), so uint64 never wraps.
    """
    digests = _hashed(xxhash.xxh3_128_digest, items, seed, as_bytes)
    words = np.frombuffer(digests, dtype=">u8").astype(np.uint64)
    first, second = words[1::2], words[0::2] | np.uint64(1)
    rows = np.arange(depth, dtype=np.uint64)[:, None]
    if width & (width - 1) == 0:
        columns = (rows * second[None, :] + first[None, :]) & np.uint64(width - 1)
    else:
        modulus = np.uint64(width)
        columns = (rows * (second % modulus)[None, :] + (first % modulus)[None, :]) % modulus
    return columns.astype(np.intp)
