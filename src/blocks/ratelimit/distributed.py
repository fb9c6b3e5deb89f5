"""Rate limits shared by several processes through a shared window store.

Theory of operation
-------------------
Each process runs a ``DistributedLimiter`` with the sliding-window-counter algorithm
(``windows.SlidingWindowCounter``) over counts kept in a ``WindowStore`` that every process
reaches: per key, the totals of the current and the previous aligned window. Windows are
aligned on the *wall clock* (``Clock.now_ms``) so that processes agree on window numbers;
clock skew between hosts shifts their windows by the skew.

Two modes trade accuracy for store traffic:

* **exact** (``sync_interval_ms=0``): each request adds its cost to the store first (one
  atomic ``add``), then decides from the returned totals; a refusal takes the cost back with a
  second ``add``. The store's atomic add serializes processes, so the aligned-window promise
  holds across all of them: never more than ``limit`` per window in total. One round trip per
  request, two per refusal; concurrent refusals may briefly hold cost that is given back,
  refusing a few requests that would have fitted.
* **batched** (``sync_interval_ms > 0``): a process decides from the totals it last read plus
  what it admitted since, and pushes its admitted cost at most every ``sync_interval_ms``
  (and at every window change). Store traffic drops to one round trip per key per interval,
  but a process does not see what others admitted since their last push: with ``P``
  processes, the total per window can exceed ``limit`` by what the other ``P - 1`` admitted
  within roughly one sync interval, and never by more than ``(P - 1) * limit``. The benchmark
  (``blocks bench ratelimit``) measures this overshoot.

``WindowStore`` implementations: ``MemoryWindowStore`` (threads of one process, and
simulation) and ``FileWindowStore`` (processes on one machine: an ``flock``-ed msgpack file).
A kv or counters service can implement the same one-method protocol.
"""

from __future__ import annotations

import fcntl
import math
import os
import threading
from dataclasses import dataclass
from typing import Protocol

from blocks.core.clock import Clock
from blocks.core.codec import pack, unpack
from blocks.core.errors import InvalidArgument
from blocks.ratelimit.api import Decision
from blocks.ratelimit.base import EPSILON, KEYS_MAX, KeyedLimiter, ceil_ms, check_positive

__all__ = ["DistributedLimiter", "FileWindowStore", "MemoryWindowStore", "WindowStore"]

STORE_KEYS_MAX = 100_000
STORE_FILE_BYTES_MAX = 64 * 1024 * 1024


class WindowStore(Protocol):
    """Per-key counts of the two latest aligned windows, shared by every process."""

    def add(self, key: str, window: int, delta: int) -> tuple[int, int]:
        """Atomically add ``delta`` to ``key``'s count for ``window`` (which may be older or
        newer than the last one seen) and return ``(count of window, count of window - 1)``."""
        ...


def _rolled_add(entry: list[int] | None, window: int, delta: int) -> tuple[list[int], int, int]:
    """Apply ``add`` to one stored entry ``[window, count, previous_count]``."""
    stored_window, count, previous = entry if entry else (window, 0, 0)
    if window == stored_window:
        count += delta
    elif window == stored_window + 1:
        stored_window, count, previous = window, delta, count
    elif window > stored_window + 1:
        stored_window, count, previous = window, delta, 0
    elif window == stored_window - 1:
        previous += delta  # a late push for the window that just ended
        return [stored_window, count, previous], previous, 0
    else:
        return [stored_window, count, previous], 0, 0  # too old to matter any more
    return [stored_window, count, previous], count, previous


class MemoryWindowStore:
    """A ``WindowStore`` in a dict, safe for threads."""

    def __init__(self, *, keys_max: int = STORE_KEYS_MAX) -> None:
        self._entries: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._keys_max = keys_max
        self.round_trips = 0

    def add(self, key: str, window: int, delta: int) -> tuple[int, int]:
        with self._lock:
            self.round_trips += 1
            entry, count, previous = _rolled_add(self._entries.get(key), window, delta)
            if key not in self._entries and len(self._entries) >= self._keys_max:
                _prune(self._entries, window)
            self._entries[key] = entry
            return count, previous

    def export_entries(self) -> dict[str, list[int]]:
        """``key -> [window, count, previous_count]`` for a snapshot."""
        with self._lock:
            return {key: list(entry) for key, entry in self._entries.items()}

    def restore_entries(self, entries: dict[str, list[int]]) -> None:
        """Replace the entries with an ``export_entries`` result; ``InvalidArgument`` if bad."""
        if not isinstance(entries, dict) or len(entries) > self._keys_max:
            raise InvalidArgument("window store entries must be a map within keys_max")
        restored: dict[str, list[int]] = {}
        for key, entry in entries.items():
            if (
                not isinstance(entry, list)
                or len(entry) != 3
                or not all(type(value) is int for value in entry)
            ):
                raise InvalidArgument(f"bad window store entry for {key!r}")
            restored[str(key)] = list(entry)
        with self._lock:
            self._entries = restored


def _prune(entries: dict[str, list[int]], window: int) -> None:
    for stale in [k for k, entry in entries.items() if entry[0] < window - 1]:
        del entries[stale]
    if len(entries) >= STORE_KEYS_MAX:
        raise InvalidArgument(f"window store holds {STORE_KEYS_MAX} live keys")


class FileWindowStore:
    """A ``WindowStore`` in one msgpack file, serialized across processes by ``flock``.

    Rate-limit state is soft: a file that does not decode (a crash mid-write) is treated as
    empty, which can admit up to one extra window's allowance.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self.round_trips = 0

    def add(self, key: str, window: int, delta: int) -> tuple[int, int]:
        self.round_trips += 1
        descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            data = os.read(descriptor, STORE_FILE_BYTES_MAX)
            try:
                entries = unpack(data) if data else {}
            except InvalidArgument:
                entries = {}
            if not isinstance(entries, dict):
                entries = {}
            entry, count, previous = _rolled_add(entries.get(key), window, delta)
            if key not in entries and len(entries) >= STORE_KEYS_MAX:
                _prune(entries, window)
            entries[key] = entry
            encoded = pack(entries)
            os.lseek(descriptor, 0, os.SEEK_SET)
            os.ftruncate(descriptor, 0)
            os.write(descriptor, encoded)
            return count, previous
        finally:
            os.close(descriptor)


@dataclass(slots=True)
class _KeyState:
    window: int
    known_count: int = 0  # window total as last read from the store (includes our pushes)
    known_previous: int = 0
    pending: int = 0  # admitted here, not yet pushed
    synced_at_us: int = -(1 << 62)


class DistributedLimiter(KeyedLimiter[_KeyState]):
    """Sliding-window-counter limit shared through ``store`` (see module docs)."""

    def __init__(
        self,
        store: WindowStore,
        limit: int,
        window_ms: int,
        *,
        sync_interval_ms: int = 0,
        clock: Clock | None = None,
        keys_max: int = KEYS_MAX,
    ) -> None:
        check_positive("window_ms", window_ms, integer=True)
        if not isinstance(sync_interval_ms, int) or sync_interval_ms < 0:
            raise InvalidArgument("sync_interval_ms must be a non-negative int")
        super().__init__(limit, clock, keys_max)
        self.limit = limit
        self._store = store
        self._window_us = window_ms * 1000
        self._sync_us = sync_interval_ms * 1000

    def _now_us(self) -> int:
        return self._clock.now_ms() * 1000

    def acquire(self, key: str, cost: int = 1) -> Decision:
        self._check(key, cost)
        now_us = self._now_us()
        window = now_us // self._window_us
        state = self._states.get(key)
        if state is None:
            self._make_room(now_us)
            state = self._states[key] = _KeyState(window)
        if state.window != window:
            self._push(key, state)
            state.window, state.known_count, state.known_previous = window, 0, 0
            state.synced_at_us = -(1 << 62)
        elapsed = now_us - window * self._window_us
        weight = (self._window_us - elapsed) / self._window_us
        if self._sync_us == 0:
            count, previous = self._store.add(key, window, cost)
            allowed = previous * weight + count <= self.limit + EPSILON
            if not allowed:
                count, previous = self._store.add(key, window, -cost)
            state.known_count, state.known_previous = count, previous
        else:
            if now_us - state.synced_at_us >= self._sync_us:
                self._push(key, state)
                state.synced_at_us = now_us
            count = state.known_count + state.pending
            allowed = state.known_previous * weight + count + cost <= self.limit + EPSILON
            if allowed:
                state.pending += cost
        return self._decision(state, allowed, cost, elapsed)

    def _push(self, key: str, state: _KeyState) -> None:
        count, previous = self._store.add(key, state.window, state.pending)
        state.pending = 0
        state.known_count, state.known_previous = count, previous

    def _decision(self, state: _KeyState, allowed: bool, cost: int, elapsed: int) -> Decision:
        window = self._window_us
        current = state.known_count + state.pending
        previous = state.known_previous
        estimate = previous * (window - elapsed) / window + current
        retry_us = 0.0
        if not allowed:
            if current + cost <= self.limit and previous:
                retry_us = window - (self.limit - current - cost) * window / previous - elapsed
            else:
                room = self.limit - cost
                into_next = max(0.0, window - room * window / current) if current else 0.0
                retry_us = window - elapsed + into_next
        return Decision(
            allowed=allowed,
            remaining=max(0, math.floor(self.limit - estimate + EPSILON)),
            retry_after_ms=ceil_ms(retry_us),
            reset_ms=ceil_ms(
                2 * window - elapsed if current else (window - elapsed if previous else 0)
            ),
        )

    def flush(self) -> None:
        """Push every key's pending cost to the store now (call before shutting down)."""
        for key, state in self._states.items():
            if state.pending:
                self._push(key, state)

    def _is_full(self, state: _KeyState, now_us: int) -> bool:
        return state.pending == 0 and state.window < now_us // self._window_us - 1
