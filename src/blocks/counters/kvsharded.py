"""Sharded counters whose shards are keys in a kv cluster: ``KvShardedCounters``.

Theory of operation
-------------------
A counter ``name`` in namespace ``prefix`` lives in keys ``<prefix>c/<name>/<i>`` for shard
``i``. kv has no atomic add and lets concurrent writes to one key become siblings, so a shard
does not hold a number: it holds, per *writer* (one ``KvShardedCounters`` instance, named
uniquely), that writer's running total for the counter and a sequence number,
``{writer: [seq, total]}``. A writer bumps its own sequence and total in memory, picks a random
shard, reads it, sets its own entry and writes it back with the read's context.

* Siblings merge by taking, per writer, the entry with the highest sequence; since only the
  writer itself ever raises its entry, that is its latest total, and no increment is lost or
  counted twice however writes interleave.
* A read sums, over every shard in use, the highest-sequence entry of each writer. The same
  writer may have older entries in other shards; the sequence makes them harmless.
* Increments spread over K keys, so no single key (and its replica set) sees every write, and
  writers mostly touch different keys, which keeps sibling sets small.

``resize(k)`` writes the namespace's shard map ``<prefix>meta`` = ``[epoch, k, span]``: new
increments go to shards ``[0, k)``, and reads cover ``[0, span)`` where ``span`` is the
largest k ever used, because a shard's entries cannot be moved to another key atomically and a
writer with a stale map may still write to a retired shard. Concurrent resizes resolve to the
highest ``(epoch, k)`` and the largest span. Writers re-read the map every
``map_refresh_s``; reads re-read it every time.

A failed increment (``Unavailable``, ``Timeout``) may or may not be counted, as with any kv
write; the writer takes it out of its own total so its next write does not count it again.
Restarted writers must use a fresh name (the default is random), or their new totals would
hide behind their old ones. Each shard holds at most ``WRITERS_MAX`` writers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Protocol, cast

from blocks.core.clock import Clock, SystemClock
from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, Corruption, InvalidArgument, Overloaded
from blocks.core.writer_entries import encode_entries, keep_latest, merge_siblings
from blocks.counters.api import COUNTERS_MAX
from blocks.counters.local import SHARDS_MAX, check_amount, check_name
from blocks.kv import Versioned

__all__ = [
    "WRITERS_MAX",
    "KvShardedCounters",
    "VersionedStore",
    "merge_entries",
    "resolve_map",
    "shard_entries",
]

WRITERS_MAX = 4096
"""Distinct writers one shard holds; past it increments raise ``Overloaded``."""
SHARD_BYTES_MAX = 1 << 20

Entries = dict[str, tuple[int, int]]


class VersionedStore(Protocol):
    """The part of ``blocks.kv.SyncClient`` the counters use."""

    def get_versioned(self, key: bytes | str) -> Versioned: ...

    def put_versioned(self, key: bytes | str, value: bytes, context: bytes | None) -> Versioned: ...


merge_entries = keep_latest
"""Per writer, keep the entry with the higher sequence (in place; returns ``into``)."""


def shard_entries(siblings: Iterable[bytes]) -> Entries:
    """Decode and merge the siblings of one shard key; ``Corruption`` if one does not parse."""
    merged = merge_siblings(
        siblings,
        width=2,
        writers_max=WRITERS_MAX,
        value_bytes_max=SHARD_BYTES_MAX,
        what="counter shard",
    )
    return cast("Entries", merged)  # every entry has width 2: (seq, total)


def resolve_map(siblings: Sequence[bytes]) -> tuple[int, int, int] | None:
    """The namespace's ``(epoch, shards, span)`` from the siblings of its map key."""
    maps = []
    for data in siblings:
        try:
            raw = unpack(data)
        except InvalidArgument:
            raw = None
        if (
            not isinstance(raw, list)
            or len(raw) != 3
            or not all(type(x) is int for x in raw)
            or not 0 < raw[1] <= raw[2] <= SHARDS_MAX
        ):
            raise Corruption("shard map must be [epoch, shards, span]")
        maps.append((raw[0], raw[1], raw[2]))
    if not maps:
        return None
    epoch, shards, _ = max(maps)
    return epoch, shards, max(span for _, _, span in maps)


class KvShardedCounters:
    """``Counters`` whose shards are kv keys; many instances (processes) share a namespace."""

    def __init__(
        self,
        store: VersionedStore,
        *,
        shards: int = 8,
        prefix: str = "counters/",
        writer: str | None = None,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        map_refresh_s: float = 1.0,
    ) -> None:
        if not isinstance(shards, int) or not 0 < shards <= SHARDS_MAX:
            raise InvalidArgument(f"shards must be in [1, {SHARDS_MAX}], got {shards!r}")
        if not prefix or len(prefix) > 200:
            raise InvalidArgument("prefix must be 1..200 characters")
        self._store = store
        self._prefix = prefix
        self._rng = rng or random.Random()
        self._clock: Clock = clock or SystemClock()
        self.writer = writer or f"w-{self._rng.getrandbits(64):016x}"
        self._initial_shards = shards
        self._map: tuple[int, int, int] | None = None
        self._map_read_at = -float("inf")
        self._map_refresh_s = map_refresh_s
        self._own: dict[str, tuple[int, int]] = {}  # name -> (seq, total) this writer made
        self._seen: dict[str, Entries] = {}  # name -> every writer's latest entry seen

    # -- the shard map -----------------------------------------------------------------------

    def _read_map(self) -> tuple[int, int, int]:
        got = self._store.get_versioned(self._prefix + "meta")
        resolved = resolve_map(got.siblings)
        if resolved is None or len(got.siblings) > 1:
            if resolved is None:
                resolved = (1, self._initial_shards, self._initial_shards)
            self._store.put_versioned(self._prefix + "meta", pack(list(resolved)), got.context)
        self._map, self._map_read_at = resolved, self._clock.monotonic()
        return resolved

    def _current_map(self) -> tuple[int, int, int]:
        if self._map is None or self._clock.monotonic() - self._map_read_at > self._map_refresh_s:
            return self._read_map()
        return self._map

    @property
    def shards(self) -> int:
        """The shard count new increments use (as this instance last read it)."""
        return self._current_map()[1]

    def span(self) -> int:
        """How many shards reads cover: the largest count ever set."""
        return self._read_map()[2]

    def resize(self, shards: int) -> None:
        """Spread new increments over ``shards`` keys; every counter keeps its value."""
        if not isinstance(shards, int) or not 0 < shards <= SHARDS_MAX:
            raise InvalidArgument(f"shards must be in [1, {SHARDS_MAX}], got {shards!r}")
        got = self._store.get_versioned(self._prefix + "meta")
        epoch, _, span = resolve_map(got.siblings) or (0, shards, shards)
        resized = (epoch + 1, shards, max(span, shards))
        self._store.put_versioned(self._prefix + "meta", pack(list(resized)), got.context)
        self._map, self._map_read_at = resized, self._clock.monotonic()

    # -- counting ----------------------------------------------------------------------------

    def _shard_key(self, name: str, shard: int) -> str:
        return f"{self._prefix}c/{name}/{shard}"

    def increment(self, name: str, amount: int = 1) -> int:
        """Add ``amount``; returns the value as this writer has seen it (its own increments
        exactly, the others' as of its last reads)."""
        check_name(name)
        check_amount(amount)
        if name not in self._own and len(self._own) >= COUNTERS_MAX:
            raise Overloaded(f"at most {COUNTERS_MAX} counters per writer")
        _, shards, _ = self._current_map()
        seq, total = self._own.get(name, (0, 0))
        seq, total = seq + 1, total + amount
        self._own[name] = (seq, total)
        key = self._shard_key(name, self._rng.randrange(shards))
        try:
            got = self._store.get_versioned(key)
            entries = shard_entries(got.siblings)
            if self.writer not in entries and len(entries) >= WRITERS_MAX:
                raise Overloaded(f"shard {key!r} holds {WRITERS_MAX} writers")
            entries[self.writer] = (seq, total)
            self._store.put_versioned(key, encode_entries(entries, SHARD_BYTES_MAX), got.context)
        except BlocksError:
            self._own[name] = (seq, total - amount)  # later writes must not count it again
            raise
        return self._remember(name, entries)

    def _remember(self, name: str, entries: Entries) -> int:
        seen = self._seen.get(name)
        if seen is None:
            if len(self._seen) >= COUNTERS_MAX:
                self._seen.clear()  # a cache: dropping it only makes returns staler
            seen = self._seen[name] = {}
        merge_entries(seen, entries)
        return sum(total for _, total in seen.values())

    def value(self, name: str) -> int:
        """The counter's value: every shard read now, each writer's latest entry summed."""
        check_name(name)
        _, _, span = self._read_map()
        merged: Entries = {}
        for shard in range(span):
            merge_entries(
                merged,
                shard_entries(self._store.get_versioned(self._shard_key(name, shard)).siblings),
            )
        return self._remember(name, merged)

    def shard_values(self, name: str) -> list[int]:
        """Per shard, the sum of the entries that are their writer's latest (for display)."""
        check_name(name)
        _, _, span = self._read_map()
        per_shard = [
            shard_entries(self._store.get_versioned(self._shard_key(name, shard)).siblings)
            for shard in range(span)
        ]
        latest: Entries = {}
        for entries in per_shard:
            merge_entries(latest, entries)
        return [
            sum(total for w, (seq, total) in entries.items() if latest.get(w, (0, 0))[0] == seq)
            for entries in per_shard
        ]
