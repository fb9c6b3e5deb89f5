"""Snowflake: 64-bit, roughly time-ordered IDs from one worker without coordination.

Theory of operation
-------------------
An ID is three fields packed into a non-negative 63-bit integer, most significant first::

    | timestamp (ms since epoch_ms) | worker id | sequence |
      41 bits                          10 bits     12 bits      (the default ``Layout``)

Because the sequence sits in the lowest bits, the IDs of one millisecond on one worker are
*consecutive integers*; ``next_ids(n)`` hands them out as a ``range`` slice, which is why the
bulk path reaches the layout's ceiling (4,096,000 IDs/s/worker for 12 sequence bits) in Python.

The generator keeps one piece of state: the last (timestamp, sequence) it issued. Every issued
ID is strictly greater than the previous one, because either the timestamp grew or the
sequence did. Two events break the easy path:

* **Sequence exhausted** within a millisecond: wait until the clock shows a later millisecond.
* **Clock moved backwards** (an NTP step): the policy is to *wait* for the clock to catch up
  when the step is at most ``backwards_wait_max_ms``, and to raise ``Unavailable`` when it is
  larger. Either way no ID below the last one is ever produced; after a raise the generator
  keeps its state and recovers once the clock has caught up.

Waiting is done through an injected ``sleep(seconds)`` callable, so a test can pass one that
advances a ``ManualClock``; the default (``nap``) spins in short steps for sub-millisecond
waits, because the clock has millisecond resolution and an OS sleep overshoots. ``try_next_ids`` never waits: it returns the IDs it can issue now
plus how long the caller should wait before asking again.

Uniqueness across workers comes from the worker id: a lease (``blocks.sequencer.lease``)
guarantees two live generators never share one. A lease also carries the previous holder's
expiry, passed here as ``min_timestamp_ms``, so a new holder never reuses a millisecond the
last holder may have used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import InvalidArgument, Unavailable
from blocks.sequencer.api import LeaseCheck

__all__ = [
    "DEFAULT_EPOCH_MS",
    "IDS_PER_CALL_MAX",
    "DecodedId",
    "Layout",
    "Snowflake",
    "decode",
]

DEFAULT_EPOCH_MS = 1_577_836_800_000
"""2020-01-01T00:00:00Z: 41 bits of milliseconds from here last until 2089."""

IDS_PER_CALL_MAX = 1 << 22
"""Bound on ``next_ids(n)``: about one second of a default worker's full output."""

WAIT_ROUNDS_MAX = 10_000
"""Bound on sleeps inside one call; a clock that never advances ends in ``Unavailable``."""

SPIN_S = 0.00005


def nap(seconds: float) -> None:
    """The default sleep: spin briefly for sub-millisecond waits, sleep for longer ones.

    ``time.sleep(0.001)`` overshoots by tens of microseconds up to a millisecond, which would
    cost the bulk path a large share of each millisecond's 4,096 IDs; re-checking the clock
    every 50 microseconds keeps ``next_ids`` near the layout's ceiling.
    """
    if seconds > 0.001:
        time.sleep(seconds)
        return
    deadline = time.perf_counter() + min(seconds, SPIN_S)
    while time.perf_counter() < deadline:
        pass


@dataclass(frozen=True, slots=True)
class Layout:
    """Bit widths of the three fields; they must add up to at most 63 (the sign bit stays 0)."""

    timestamp_bits: int = 41
    worker_bits: int = 10
    sequence_bits: int = 12

    def __post_init__(self) -> None:
        for name in ("timestamp_bits", "worker_bits", "sequence_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"{name} must be a non-negative int, got {value!r}")
        if self.timestamp_bits < 20 or self.sequence_bits < 1:
            raise InvalidArgument("need at least 20 timestamp bits and 1 sequence bit")
        total = self.timestamp_bits + self.worker_bits + self.sequence_bits
        if total > 63:
            raise InvalidArgument(f"layout uses {total} bits; at most 63 fit a signed int64")

    @property
    def workers(self) -> int:
        """How many distinct worker ids the layout holds."""
        return 1 << self.worker_bits

    @property
    def ids_per_ms(self) -> int:
        """Sequence numbers per millisecond per worker."""
        return 1 << self.sequence_bits


@dataclass(frozen=True, slots=True)
class DecodedId:
    """The fields of one ID; ``unix_ms`` is the wall-clock time the ID was made."""

    unix_ms: int
    worker_id: int
    sequence: int


class Snowflake:
    """A Snowflake generator for one worker id. Not thread-safe: one per thread or a lock."""

    __slots__ = (
        "_backwards_wait_max_ms",
        "_clock",
        "_epoch_ms",
        "_last_ms",
        "_layout",
        "_lease",
        "_next_sequence",
        "_sleep",
        "_worker_id",
        "_worker_shifted",
    )

    def __init__(
        self,
        worker_id: int,
        *,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        clock: Clock | None = None,
        layout: Layout | None = None,
        backwards_wait_max_ms: int = 50,
        min_timestamp_ms: int = 0,
        sleep: Callable[[float], None] = nap,
        lease: LeaseCheck | None = None,
    ) -> None:
        self._layout = layout or Layout()
        if not isinstance(worker_id, int) or not 0 <= worker_id < self._layout.workers:
            raise InvalidArgument(
                f"worker_id must be in [0, {self._layout.workers}), got {worker_id!r}"
            )
        if epoch_ms < 0 or backwards_wait_max_ms < 0 or min_timestamp_ms < 0:
            raise InvalidArgument("epoch_ms, backwards_wait_max_ms, min_timestamp_ms must be >= 0")
        self._worker_id = worker_id
        self._epoch_ms = epoch_ms
        self._clock: Clock = clock or SystemClock()
        self._backwards_wait_max_ms = backwards_wait_max_ms
        self._sleep = sleep
        self._lease = lease
        self._worker_shifted = worker_id << self._layout.sequence_bits
        # Invariant: every issued ID had timestamp < _last_ms, or == _last_ms with a sequence
        # < _next_sequence. Starting at min_timestamp_ms with the sequence exhausted means the
        # first ID uses a strictly later millisecond.
        self._last_ms = max(epoch_ms, min_timestamp_ms)
        self._next_sequence = self._layout.ids_per_ms if min_timestamp_ms else 0

    @property
    def worker_id(self) -> int:
        return self._worker_id

    @property
    def layout(self) -> Layout:
        return self._layout

    @property
    def epoch_ms(self) -> int:
        return self._epoch_ms

    def try_next_ids(self, n: int) -> tuple[range, int]:
        """Issue up to ``n`` IDs without waiting: ``(ids, wait_ms)``.

        ``ids`` is a range of consecutive IDs from one millisecond (possibly empty); when it
        holds fewer than ``n``, ``wait_ms`` says how long until more can be issued. Raises
        ``Unavailable`` when the lease is lost, when the clock is more than
        ``backwards_wait_max_ms`` behind the last issued ID, or when timestamps run out.
        """
        if self._lease is not None and not self._lease.held():
            raise Unavailable(f"worker {self._worker_id}: lease lost, refusing to issue IDs")
        now_ms = self._clock.now_ms()
        if now_ms < self._last_ms:
            behind_ms = self._last_ms - now_ms
            if behind_ms > self._backwards_wait_max_ms:
                raise Unavailable(
                    f"clock moved backwards by {behind_ms} ms "
                    f"(more than {self._backwards_wait_max_ms} ms); refusing to issue IDs"
                )
            return range(0), behind_ms
        if now_ms > self._last_ms:
            self._last_ms = now_ms
            self._next_sequence = 0
        available = self._layout.ids_per_ms - self._next_sequence
        if available <= 0:
            return range(0), 1
        offset = self._last_ms - self._epoch_ms
        if offset >> self._layout.timestamp_bits:
            raise Unavailable("timestamp field exhausted: the epoch is too far in the past")
        base = (
            offset << (self._layout.worker_bits + self._layout.sequence_bits)
        ) | self._worker_shifted
        take = min(n, available)
        start = base + self._next_sequence
        self._next_sequence += take
        return range(start, start + take), 0 if take == n else 1

    def next_ids(self, n: int) -> list[int]:
        """Issue ``n`` strictly increasing IDs, waiting for later milliseconds as needed."""
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= IDS_PER_CALL_MAX:
            raise InvalidArgument(f"n must be an int in [0, {IDS_PER_CALL_MAX}], got {n!r}")
        ids: list[int] = []
        for _ in range(WAIT_ROUNDS_MAX):
            chunk, wait_ms = self.try_next_ids(n - len(ids))
            ids.extend(chunk)
            if len(ids) == n:
                return ids
            self._sleep(wait_ms / 1000.0)
        raise Unavailable(f"clock did not advance after {WAIT_ROUNDS_MAX} waits")

    def next_id(self) -> int:
        """Issue one ID, greater than every ID this generator issued before."""
        for _ in range(WAIT_ROUNDS_MAX):
            chunk, wait_ms = self.try_next_ids(1)
            if chunk:
                return chunk[0]
            self._sleep(wait_ms / 1000.0)
        raise Unavailable(f"clock did not advance after {WAIT_ROUNDS_MAX} waits")

    def decode(self, snowflake_id: int) -> DecodedId:
        """Split an ID made with this generator's layout and epoch into its fields."""
        return decode(snowflake_id, layout=self._layout, epoch_ms=self._epoch_ms)


def decode(
    snowflake_id: int, *, layout: Layout | None = None, epoch_ms: int = DEFAULT_EPOCH_MS
) -> DecodedId:
    """Split ``snowflake_id`` into timestamp, worker and sequence; ``InvalidArgument`` if bad."""
    layout = layout or Layout()
    total_bits = layout.timestamp_bits + layout.worker_bits + layout.sequence_bits
    if not isinstance(snowflake_id, int) or isinstance(snowflake_id, bool):
        raise InvalidArgument(f"an ID is an int, got {type(snowflake_id).__name__}")
    if not 0 <= snowflake_id < (1 << total_bits):
        raise InvalidArgument(f"ID {snowflake_id} does not fit the {total_bits}-bit layout")
    sequence = snowflake_id & (layout.ids_per_ms - 1)
    worker_id = (snowflake_id >> layout.sequence_bits) & (layout.workers - 1)
    offset = snowflake_id >> (layout.sequence_bits + layout.worker_bits)
    return DecodedId(unix_ms=epoch_ms + offset, worker_id=worker_id, sequence=sequence)
