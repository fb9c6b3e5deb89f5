"""A ``WindowStore`` kept in a kv cluster, so ``DistributedLimiter`` can share limits there.

Theory of operation
-------------------
kv has no atomic add, and two read-modify-writes of one key from the same read become
siblings. So a limiter key's value is not one count but, per *process* (one
``KvWindowStore``, named uniquely), that process's own window counts and a sequence number:
``{process: [seq, window, count, previous]}``. ``add`` bumps the process's own entry in
memory (rolling it to a new window as ``MemoryWindowStore`` does), reads the key, merges the
siblings (per process, the highest sequence wins: only that process ever raises it), puts its
entry in and writes back with the read's context. The totals it returns are the sums over
every process's entry as this read saw them.

What that buys and costs, against the atomic stores:

* Nothing admitted is lost or double counted: every process's latest entry survives any
  interleaving, so the totals converge to the exact sum of what was charged.
* ``add`` is not linearizable: a process does not see what others charged between its read
  and its write, nor what is still on the way to a read quorum. In exact mode the total per
  window can therefore exceed the limit by what the other processes admitted within one kv
  round trip; in batched mode that adds to the batching overshoot. ``blocks.ratelimit.
  kvaccuracy`` measures it.
* Entries of processes whose window is two or more behind contribute nothing and are
  dropped on write; at most ``PROCESSES_MAX`` processes per key (``Overloaded`` beyond).
"""

from __future__ import annotations

import random
from typing import Protocol, cast

from blocks.core.errors import BlocksError, InvalidArgument, Overloaded
from blocks.core.writer_entries import encode_entries, merge_siblings
from blocks.kv import Versioned
from blocks.ratelimit.distributed import STORE_KEYS_MAX, _rolled_add

__all__ = ["PROCESSES_MAX", "KvWindowStore", "VersionedStore", "merge_windows", "window_totals"]

PROCESSES_MAX = 1024
VALUE_BYTES_MAX = 1 << 20

Entry = tuple[int, int, int, int]  # seq, window, count, previous
Entries = dict[str, Entry]


class VersionedStore(Protocol):
    """The part of ``blocks.kv.SyncClient`` the store uses."""

    def get_versioned(self, key: bytes | str) -> Versioned: ...

    def put_versioned(self, key: bytes | str, value: bytes, context: bytes | None) -> Versioned: ...


def merge_windows(siblings: list[bytes] | tuple[bytes, ...]) -> Entries:
    """Decode the siblings of one limiter key and keep each process's highest-seq entry."""
    merged = merge_siblings(
        siblings,
        width=4,
        writers_max=PROCESSES_MAX,
        value_bytes_max=VALUE_BYTES_MAX,
        what="window entry",
    )
    return cast("Entries", merged)  # every entry has width 4: (seq, window, count, previous)


def window_totals(entries: Entries, window: int) -> tuple[int, int]:
    """``(count of window, count of window - 1)`` summed over every process's entry."""
    count = previous = 0
    for _, entry_window, entry_count, entry_previous in entries.values():
        if entry_window == window:
            count += entry_count
            previous += entry_previous
        elif entry_window == window - 1:
            previous += entry_count
        elif entry_window == window + 1:  # a process whose clock is a window ahead
            count += entry_previous
    return count, previous


class KvWindowStore:
    """``WindowStore`` over kv (``SyncClient`` or anything with versioned get/put)."""

    def __init__(
        self,
        store: VersionedStore,
        *,
        prefix: str = "ratelimit/",
        process: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not prefix or len(prefix) > 200:
            raise InvalidArgument("prefix must be 1..200 characters")
        self._store = store
        self._prefix = prefix
        self.process = process or f"p-{(rng or random.Random()).getrandbits(64):016x}"
        self._own: dict[str, Entry] = {}
        self.round_trips = 0

    def add(self, key: str, window: int, delta: int) -> tuple[int, int]:
        if type(window) is not int or type(delta) is not int:
            raise InvalidArgument("window and delta must be ints")
        if key not in self._own and len(self._own) >= STORE_KEYS_MAX:
            self._forget_stale(window)
        before = self._own.get(key)
        seq, own_window, count, previous = before or (0, window, 0, 0)
        rolled, _, _ = _rolled_add([own_window, count, previous], window, delta)
        mine: Entry = (seq + 1, rolled[0], rolled[1], rolled[2])
        self._own[key] = mine
        try:
            entries = self._write(self._prefix + key, mine, window)
        except BlocksError:
            if before is not None:  # the next write must not count this one again
                self._own[key] = (mine[0], before[1], before[2], before[3])
            else:
                self._own[key] = (mine[0], window, 0, 0)
            raise
        return window_totals(entries, window)

    def _write(self, key: str, mine: Entry, window: int) -> Entries:
        self.round_trips += 1
        got = self._store.get_versioned(key)
        entries = {
            process: entry
            for process, entry in merge_windows(got.siblings).items()
            if entry[1] >= window - 1 and process != self.process
        }
        if len(entries) >= PROCESSES_MAX:
            raise Overloaded(f"limiter key {key!r} is shared by {PROCESSES_MAX} processes")
        entries[self.process] = mine
        value = encode_entries(entries, VALUE_BYTES_MAX)
        self._store.put_versioned(key, value, got.context)
        return entries

    def _forget_stale(self, window: int) -> None:
        for key in [k for k, entry in self._own.items() if entry[1] < window - 1]:
            del self._own[key]
        if len(self._own) >= STORE_KEYS_MAX:
            raise Overloaded(f"window store tracks {STORE_KEYS_MAX} live keys")
