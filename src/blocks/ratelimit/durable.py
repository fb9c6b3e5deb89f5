"""A rate-limit server's state across restarts: a clock that continues, a log and snapshots.

Theory of operation
-------------------
Limiter state is times and counts on the *monotonic* clock (token refill times, GCRA's
theoretical arrival time, window indices, log entries), and a new process starts a new
monotonic origin. ``ContinuedClock`` makes the limiters' monotonic time continue across a
restart instead: it resumes from the last time the old process recorded plus the downtime
measured on the wall clock, clamped at zero. So every stored state stays valid as it is; a
wall clock stepped *back* across the restart counts as no downtime (allowances refill later:
never an extra admission), while one stepped *forward* counts as downtime (allowances refill
early by the step: the documented limit of this design).

``RateLimitStore`` keeps ``DATA_DIR/log``, a ``blocks.core.log.SegmentLog`` of what changed
state: every *admitted* ``acquire`` (key, cost, and the monotonic microsecond it was decided
at; a refusal changes nothing a replay needs) and every shared-window ``add``. The service
logs a record and waits for it to be durable (group commit) before it replies, so a client
never holds an admission that a crash forgets. ``DATA_DIR/snapshot`` holds the limiter's
states, the window store's entries and the clock, every
``snapshot_records`` records and at stop. ``open`` restores the snapshot, replays the log with
the clock held at each record's time (``ContinuedClock.held``), which reproduces the exact
states, then lets the clock continue.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterator
from typing import Any

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import Corruption, InvalidArgument, Overloaded
from blocks.core.log import FsyncPolicy
from blocks.core.snapshot_log import SnapshotLog
from blocks.ratelimit.base import KeyedLimiter
from blocks.ratelimit.distributed import MemoryWindowStore
from blocks.ratelimit.windows import _Log

__all__ = ["SNAPSHOT_RECORDS", "ContinuedClock", "RateLimitStore"]

SNAPSHOT_RECORDS = 20_000
SNAPSHOT_BYTES_MAX = 512 * 1024 * 1024
_log = logging.getLogger(__name__)


class ContinuedClock:
    """A ``Clock`` whose monotonic reading continues from a previous process's (see above).

    ``held(t)`` pins the monotonic reading at ``t`` seconds for a replay or for one decision,
    so that the time a record carries is exactly the time the limiter used."""

    __slots__ = ("_base", "_held", "_offset_s")

    def __init__(self, base: Clock | None = None) -> None:
        self._base: Clock = base or SystemClock()
        self._offset_s = 0.0
        self._held: float | None = None

    def now_ms(self) -> int:
        return self._base.now_ms()

    def monotonic(self) -> float:
        if self._held is not None:
            return self._held
        return self._base.monotonic() + self._offset_s

    def continue_from(self, monotonic_s: float, wall_ms: int) -> None:
        """Resume at ``monotonic_s`` plus the wall-clock time since ``wall_ms`` (at least 0).
        Call once, at start, before anything reads the clock live (it may move the reading
        backwards from this process's own origin, which is the point)."""
        downtime_s = max(0, self._base.now_ms() - wall_ms) / 1000.0
        self._offset_s = monotonic_s + downtime_s - self._base.monotonic()

    @contextlib.contextmanager
    def held(self, monotonic_s: float | None = None) -> Iterator[float]:
        """Pin the reading (at ``monotonic_s``, or now) for the duration of the block."""
        value = self.monotonic() if monotonic_s is None else monotonic_s
        previous, self._held = self._held, value
        try:
            yield value
        finally:
            self._held = previous


def encode_state(state: Any) -> Any:
    """A limiter's per-key state as msgpack data (tuples, numbers, sliding logs)."""
    if isinstance(state, tuple):
        return {"t": list(state)}
    if isinstance(state, _Log):
        return {"log": [list(entry) for entry in state.entries], "used": state.used}
    if isinstance(state, int | float):
        return state
    raise AssertionError(f"unknown limiter state {state!r}")


def decode_state(data: Any) -> Any:
    if isinstance(data, int | float) and not isinstance(data, bool):
        return data
    if isinstance(data, dict) and isinstance(data.get("t"), list):
        return tuple(data["t"])
    if isinstance(data, dict) and isinstance(data.get("log"), list):
        log = _Log()
        log.entries = deque([int(t), int(c)] for t, c in data["log"])
        log.used = int(data["used"])
        return log
    raise InvalidArgument(f"not a limiter state: {data!r}")


class RateLimitStore:
    """The durable side of one server's limiter and window store under ``directory``."""

    def __init__(
        self,
        directory: str,
        limiter: KeyedLimiter[Any],
        windows: MemoryWindowStore,
        clock: ContinuedClock,
        *,
        fsync: FsyncPolicy = "batch",
        snapshot_records: int = SNAPSHOT_RECORDS,
    ) -> None:
        self._limiter = limiter
        self._windows = windows
        self._clock = clock
        self._storage = SnapshotLog(
            directory,
            "rate-limit",
            fsync=fsync,
            snapshot_records=snapshot_records,
            snapshot_bytes_max=SNAPSHOT_BYTES_MAX,
        )
        self._last: tuple[float, int] | None = None  # (monotonic s, wall ms) last recorded
        self.replayed = 0
        self.skipped = 0  # records a bound refused on replay (limits met in another order)

    @property
    def snapshots(self) -> int:
        return self._storage.snapshots

    def open(self) -> None:
        """Restore the snapshot, replay the log after it, and let the clock continue."""
        self._storage.open(self._restore, self._replay)
        if self._last is not None:
            self._clock.continue_from(*self._last)

    def _restore(self, state: Any) -> None:
        monotonic_s, wall_ms, states, windows = state
        self._limiter.restore_states({k: decode_state(v) for k, v in states.items()})
        self._windows.restore_entries(windows)
        self._last = float(monotonic_s), int(wall_ms)

    def _state(self) -> list[Any]:
        states = {k: encode_state(v) for k, v in self._limiter.export_states().items()}
        return [
            self._clock.monotonic(),
            self._clock.now_ms(),
            states,
            self._windows.export_entries(),
        ]

    def _replay(self, record: Any) -> None:
        if not isinstance(record, list) or len(record) != 6:
            raise Corruption("a rate-limit log record does not decode")
        kind, key, first, second, monotonic_s, wall_ms = record
        self.replayed += 1
        try:
            if kind == "acquire":
                with self._clock.held(monotonic_s):
                    self._limiter.acquire(key, first)
            elif kind == "window":
                self._windows.add(key, first, second)
            else:
                raise Corruption(f"unknown rate-limit log record {kind!r}")
        except (InvalidArgument, Overloaded) as error:  # a bound met in a different order
            self.skipped += 1
            _log.warning("rate-limit log record skipped on replay: %s", error)
        self._last = float(monotonic_s), int(wall_ms)

    async def admitted(self, key: str, cost: int, monotonic_s: float) -> None:
        """Log an admission decided at ``monotonic_s``; returns once it is durable."""
        await self._storage.append(["acquire", key, cost, 0, monotonic_s, self._clock.now_ms()])
        self.maybe_snapshot()

    async def window_added(self, key: str, window: int, delta: int) -> None:
        record = ["window", key, window, delta, self._clock.monotonic(), self._clock.now_ms()]
        await self._storage.append(record)
        self.maybe_snapshot()

    def maybe_snapshot(self, *, force: bool = False) -> bool:
        return self._storage.maybe_snapshot(self._state, force=force)

    def close(self, *, snapshot: bool = True) -> None:
        """Snapshot (unless ``snapshot=False``, which leaves the files as kill -9 would) and
        close the log."""
        self._storage.close(self._state if snapshot else None)
