"""Frequency sketches: a count-min sketch with aging and a doorkeeper, and a heavy-hitter list.

Theory of operation. ``FrequencySketch`` estimates how often each key was seen recently, in
memory proportional to the cache's capacity rather than to the number of keys ever seen:

* four rows of small counters (bytes capped at 15), each row 4 x capacity wide (Caffeine's
  sketch has 16 counters per entry too), indexed by double hashing of one stable 64-bit hash;
  an estimate is the minimum over the rows. Increments are conservative (only the rows
  holding the minimum grow), which reduces over-estimation from collisions.
* a *doorkeeper*, a small Bloom filter in front of the counters: a key's first sighting only
  sets its doorkeeper bits, so the long tail of one-hit wonders never touches the counters.
  An estimate adds 1 when the key passed the doorkeeper.
* *aging*: after ``sample_size`` increments every counter is halved and the doorkeeper is
  cleared, so yesterday's heavy hitters fade (halving is one ``bytes.translate`` call).

Speed. ``slots(key)`` computes where a key lives once; a caller that keeps it (the cache does,
per resident key) counts with ``add`` without hashing again. Keys whose four counters are at
the cap are remembered in ``saturated`` until the next aging: counting them changes nothing,
so ``add_many`` skips them at C speed, and under skewed traffic they are most of the reads.

``SpaceSaving`` keeps the k most frequent keys of a stream exactly bounded in memory
(Metwally et al.): it is what the cluster client uses to spot hot keys.

Hashes come from ``stable_hash`` (xxh3 of the key's bytes), never the builtin ``hash()``, so
simulations are identical from run to run and process to process.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from itertools import filterfalse

import xxhash

from blocks.core.errors import InvalidArgument

__all__ = ["COUNTER_MAX", "FrequencySketch", "Slots", "SpaceSaving", "stable_hash"]

_MASK64 = (1 << 64) - 1
COUNTER_MAX = 15
_ROW_COUNTERS_PER_ENTRY = 4
"""Counters per row for each entry of capacity (Caffeine has 16 counters per entry in all)."""
_HALVE = bytes(value >> 1 for value in range(256))


_xxh3 = xxhash.xxh3_64_intdigest


def stable_hash(key: Hashable) -> int:
    """A 64-bit hash of ``key`` that is the same in every process and run.

    xxh3 of: the UTF-8 bytes of a str, the bytes themselves, the 8 little-endian bytes of an
    int (taken modulo 2^64), or the ``repr`` of anything else.
    """
    kind = type(key)
    if kind is int:
        return _xxh3((key & _MASK64).to_bytes(8, "little"))  # type: ignore[operator]
    if kind is str:
        return _xxh3(key.encode("utf-8", "surrogatepass"))  # type: ignore[attr-defined]
    if kind is bytes:
        return _xxh3(key)  # type: ignore[arg-type]
    if isinstance(key, int):
        return _xxh3((int(key) & _MASK64).to_bytes(8, "little"))
    if isinstance(key, bytes):
        return _xxh3(bytes(key))
    if isinstance(key, str):
        return _xxh3(str(key).encode("utf-8", "surrogatepass"))
    return _xxh3(repr(key).encode("utf-8", "surrogatepass"))


def _power_of_two_at_least(value: int) -> int:
    return 1 << max(4, (value - 1).bit_length())


Slots = tuple[int, int, int, int, int, int, int, int]
"""Where one key lives in a ``FrequencySketch``: its two doorkeeper bits as (byte, mask) pairs,
then its four counter indices, one per row. Computed once per key by ``slots``."""


class FrequencySketch:
    """Count-min sketch (4 rows, counters capped at 15) with a doorkeeper and periodic aging."""

    __slots__ = (
        "_counters",
        "_door",
        "_door_mask",
        "_half_mask",
        "_mask",
        "_width",
        "_width2",
        "_width3",
        "additions",
        "sample_size",
        "saturated",
        "saturated_max",
    )

    def __init__(self, capacity: int, *, sample_factor: int = 10) -> None:
        if capacity < 1 or sample_factor < 1:
            raise InvalidArgument("capacity and sample_factor must be >= 1")
        self._width = _power_of_two_at_least(_ROW_COUNTERS_PER_ENTRY * capacity)
        self._mask = self._width - 1
        self._half_mask = min(self._mask, 0xFFFFFFFF)
        self._width2, self._width3 = 2 * self._width, 3 * self._width
        """Where the third and fourth rows start."""
        self._counters = bytearray(4 * self._width)
        self.sample_size = sample_factor * max(capacity, 16)
        door_bits = _power_of_two_at_least(4 * self.sample_size)
        self._door = bytearray(door_bits // 8)
        self._door_mask = door_bits - 1
        self.additions = 0
        """Increments since the last aging; aging happens when it reaches ``sample_size``."""
        self.saturated: set[Hashable] = set()
        """Keys whose doorkeeper bits are set and whose four counters are all at the cap, so
        that counting them changes nothing but ``additions``. Only aging lowers a counter or
        clears a bit, and aging empties this set, so membership is exact. Bounded by
        ``saturated_max``; a saturated key left out only takes the slow path."""
        self.saturated_max = max(capacity, 16)

    def slots(self, key: Hashable) -> Slots:
        """Where ``key`` lives: a pure function of its ``stable_hash`` and the sketch's size."""
        # Row i's index is (low + i * high) mod width, of the hash's two 32-bit halves. The
        # width is a power of two, so both halves can be reduced first (by ``_half_mask``),
        # and then the arithmetic runs on small ints instead of 64-bit ones: the same slots
        # in half the time.
        if type(key) is int:
            h = _xxh3((key & _MASK64).to_bytes(8, "little"))
        else:
            h = stable_hash(key)
        door_mask, mask, half = self._door_mask, self._mask, self._half_mask
        first, second = h & door_mask, (h >> 21) & door_mask
        low, high = h & half, ((h >> 32) | 1) & half
        b = low + high
        c = b + high
        return (
            first >> 3,
            1 << (first & 7),
            second >> 3,
            1 << (second & 7),
            low,
            self._width + (b & mask),
            self._width2 + (c & mask),
            self._width3 + ((c + high) & mask),
        )

    def slots_many(self, keys: Sequence[Hashable]) -> list[Slots]:
        """``[self.slots(key) for key in keys]``, with the index arithmetic done by numpy when
        it is installed (the hashing stays one ``stable_hash`` call per key)."""
        try:
            import numpy as np
        except ImportError:  # numpy is optional: the plain loop gives the same slots
            return [self.slots(key) for key in keys]
        hashes = np.fromiter(map(stable_hash, keys), dtype=np.uint64, count=len(keys))
        door_mask, mask = np.uint64(self._door_mask), np.uint64(self._mask)
        width = np.uint64(self._width)
        first, second = hashes & door_mask, (hashes >> np.uint64(21)) & door_mask
        low, high = hashes & np.uint64(0xFFFFFFFF), (hashes >> np.uint64(32)) | np.uint64(1)
        one, seven, three = np.uint64(1), np.uint64(7), np.uint64(3)
        columns = (
            first >> three,
            one << (first & seven),
            second >> three,
            one << (second & seven),
            low & mask,
            width + ((low + high) & mask),
            np.uint64(2) * width + ((low + np.uint64(2) * high) & mask),
            np.uint64(3) * width + ((low + np.uint64(3) * high) & mask),
        )
        return list(zip(*(column.tolist() for column in columns), strict=True))

    def increment(self, key: Hashable) -> None:
        """Count one sighting of ``key``."""
        self.add(key, self.slots(key))

    def add(self, key: Hashable, slots: Slots) -> None:
        """Count one sighting of ``key``, whose ``slots(key)`` the caller kept."""
        if key not in self.saturated:
            self._tally(key, slots)
        self.additions += 1
        if self.additions >= self.sample_size:
            self.age()

    def add_many(self, keys: Sequence[Hashable], slots_of: Mapping[Hashable, Slots]) -> None:
        """``add(key, slots_of[key])`` for each of ``keys`` in order, with the same result.

        Every sighting advances the aging clock by exactly one, so the batch is cut only
        where aging falls, and saturated keys are skipped at C speed.
        """
        saturated, tally = self.saturated, self._tally
        start, count = 0, len(keys)
        while start < count:
            end = min(count, start + self.sample_size - self.additions)
            chunk = keys if start == 0 and end == count else keys[start:end]
            for key in filterfalse(saturated.__contains__, chunk):
                tally(key, slots_of[key])
            self.additions += end - start
            if self.additions >= self.sample_size:
                self.age()  # empties ``saturated`` in place
            start = end

    def _tally(self, key: Hashable, slots: Slots) -> None:
        """Count ``key`` in the doorkeeper or the counters; ``additions`` is the caller's."""
        first, first_bit, second, second_bit, a, b, c, d = slots
        door = self._door
        if door[first] & first_bit and door[second] & second_bit:
            counters = self._counters
            ca, cb, cc, cd = counters[a], counters[b], counters[c], counters[d]
            least = min(ca, cb, cc, cd)
            if least < COUNTER_MAX:
                grown = least + 1
                if ca == least:
                    counters[a] = grown
                if cb == least:
                    counters[b] = grown
                if cc == least:
                    counters[c] = grown
                if cd == least:
                    counters[d] = grown
            elif len(self.saturated) < self.saturated_max:
                self.saturated.add(key)
        else:
            door[first] |= first_bit
            door[second] |= second_bit

    def estimate(self, key: Hashable) -> int:
        """Estimated recent sightings of ``key`` (never below the true count since aging)."""
        return self.frequency(key, self.slots(key))

    def frequency(self, key: Hashable, slots: Slots) -> int:
        """``estimate(key)`` for a caller that kept ``slots(key)``."""
        if key in self.saturated:
            return COUNTER_MAX + 1
        first, first_bit, second, second_bit, a, b, c, d = slots
        counters, door = self._counters, self._door
        low = min(counters[a], counters[b], counters[c], counters[d])
        return low + 1 if door[first] & first_bit and door[second] & second_bit else low

    def age(self) -> None:
        """Halve every counter and clear the doorkeeper."""
        self._counters = bytearray(self._counters.translate(_HALVE))
        self._door = bytearray(len(self._door))
        self.saturated.clear()
        self.additions //= 2


class SpaceSaving:
    """The ``k`` most frequent keys of a stream, with counts that over-estimate by at most ``error``.

    When a new key arrives and the table is full, it replaces the key with the smallest count
    and inherits that count (recorded as its error bound). Memory is exactly ``k`` entries.
    """

    __slots__ = ("_counts", "_errors", "k", "total")

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidArgument(f"k must be an integer >= 1, got {k!r}")
        self.k = k
        self._counts: dict[Hashable, int] = {}
        self._errors: dict[Hashable, int] = {}
        self.total = 0

    def add(self, key: Hashable, count: int = 1) -> int:
        """Count ``count`` sightings of ``key``; returns its (over-)estimated count."""
        self.total += count
        counts = self._counts
        if key in counts:
            counts[key] += count
            return counts[key]
        if len(counts) < self.k:
            counts[key] = count
            self._errors[key] = 0
            return count
        smallest = min(counts, key=counts.__getitem__)
        floor = counts.pop(smallest)
        del self._errors[smallest]
        counts[key] = floor + count
        self._errors[key] = floor
        return counts[key]

    def count(self, key: Hashable) -> int:
        """Estimated count (0 when not tracked)."""
        return self._counts.get(key, 0)

    def guaranteed(self, key: Hashable) -> int:
        """A lower bound on the true count."""
        return self._counts.get(key, 0) - self._errors.get(key, 0)

    def top(self, n: int | None = None) -> list[tuple[Hashable, int]]:
        """Tracked keys by decreasing estimated count."""
        ranked = sorted(self._counts.items(), key=lambda item: -item[1])
        return ranked if n is None else ranked[:n]

    def decay(self) -> None:
        """Halve every count so that old heat fades."""
        self.total //= 2
        self._counts = {key: count // 2 for key, count in self._counts.items() if count > 1}
        self._errors = {key: min(self._errors[key], self._counts[key]) for key in self._counts}
