"""How far a limit shared through kv overshoots: a manual-clock measurement over a real kv.

Theory of operation
-------------------
``KvWindowStore`` is exact about what was charged but not linearizable: a process does not
see what others wrote while their writes are still travelling. ``InFlightWrites`` puts that
delay on a real kv client: a put is held for ``lag_ms`` (on the injected clock) before it
reaches kv, with the context of the read it followed, so concurrent read-modify-writes really
become kv siblings. ``overshoot_rows`` then runs P ``DistributedLimiter`` processes, each
offered one request per millisecond against a shared limit of 1,000 per second, as the
atomic-store measurement in ``benchmarks/ratelimit.py`` does, and reports the worst window.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from blocks.core.clock import Clock, ManualClock
from blocks.core.errors import Overloaded
from blocks.kv import Versioned
from blocks.ratelimit.distributed import DistributedLimiter
from blocks.ratelimit.kvstore import KvWindowStore, VersionedStore

__all__ = ["InFlightWrites", "overshoot_rows"]

IN_FLIGHT_MAX = 100_000


class InFlightWrites:
    """A ``VersionedStore`` whose puts land ``lag_ms`` after they are made."""

    def __init__(self, store: VersionedStore, clock: Clock, lag_ms: int) -> None:
        self._store, self._clock, self._lag_ms = store, clock, lag_ms
        self._queue: deque[tuple[int, bytes | str, bytes, bytes | None]] = deque()

    def _land(self, until_ms: int) -> None:
        while self._queue and self._queue[0][0] <= until_ms:
            _, key, value, context = self._queue.popleft()
            self._store.put_versioned(key, value, context)

    def get_versioned(self, key: bytes | str) -> Versioned:
        self._land(self._clock.now_ms())
        return self._store.get_versioned(key)

    def put_versioned(self, key: bytes | str, value: bytes, context: bytes | None) -> Versioned:
        if len(self._queue) >= IN_FLIGHT_MAX:
            raise Overloaded("too many writes in flight")
        self._queue.append((self._clock.now_ms() + self._lag_ms, key, value, context))
        return Versioned(value, (value,), context or b"")

    def flush(self) -> None:
        self._land(1 << 62)


def overshoot_rows(
    store: VersionedStore,
    *,
    seconds: int = 3,
    processes: tuple[int, ...] = (2, 4),
    lags_ms: tuple[int, ...] = (2,),
    sync_intervals_ms: tuple[int, ...] = (0, 10, 50),
    progress: Callable[[str], None] | None = None,
    limit: int = 1000,
    window_ms: int = 1000,
    duration_ms: int | None = None,
) -> list[list[Any]]:
    """``[processes, lag ms, sync ms, worst window / limit, steady worst / limit, kv round
    trips per decision]`` per configuration; each uses its own key prefix in ``store``.

    Each process offers one request per millisecond for ``duration_ms`` (default ``seconds``
    x 1,000) against ``limit`` per ``window_ms``; a test scales the three down together."""
    rows: list[list[Any]] = []
    duration_ms = seconds * 1000 if duration_ms is None else duration_ms
    run = 0
    for count in processes:
        for lag_ms in lags_ms:
            for sync_ms in sync_intervals_ms:
                run += 1
                clock = ManualClock(wall_ms=1_700_000_000_000)
                lagged = InFlightWrites(store, clock, lag_ms)
                stores = [
                    KvWindowStore(lagged, prefix=f"acc{run}/", process=f"p{i}")
                    for i in range(count)
                ]
                limiters = [
                    DistributedLimiter(s, limit, window_ms, sync_interval_ms=sync_ms, clock=clock)
                    for s in stores
                ]
                admitted: Counter[int] = Counter()
                decisions = 0
                for _ in range(duration_ms):
                    for limiter in limiters:
                        decisions += 1
                        if limiter.acquire("api").allowed:
                            admitted[clock.now_ms() // window_ms] += 1
                    clock.advance(ms=1)
                lagged.flush()
                steady = [admitted[w] for w in sorted(admitted)[1:]] or [0]
                trips = sum(s.round_trips for s in stores)
                rows.append(
                    [
                        count,
                        lag_ms,
                        sync_ms or "exact",
                        f"{max(admitted.values()) / limit:.2f}",
                        f"{max(steady) / limit:.2f}",
                        f"{trips / decisions:.3f}",
                    ]
                )
                if progress is not None:
                    progress(" | ".join(str(x) for x in rows[-1]))
    return rows
