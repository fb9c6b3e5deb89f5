"""A virtual-time asyncio event loop for deterministic simulation.

Theory of operation: asyncio's selector loop asks its selector to wait for I/O for as long as
the earliest timer allows (``select(timeout)``), then runs every timer whose deadline has
passed according to ``loop.time()``. ``VirtualTimeLoop`` replaces both ends of that
conversation: ``time()`` reads a virtual clock, and the selector, instead of sleeping for
``timeout`` seconds, moves the virtual clock forward by ``timeout`` and returns at once. So when
every task is waiting, time jumps straight to the next timer (as trio's autojump ``MockClock``
does): a simulated hour of delays, timeouts and retries costs no wall time.

Because asyncio runs ready callbacks in FIFO order and timers in deadline order, and the
virtual clock only moves when nothing is ready, the same program with the same seed makes the
same decisions in the same order on every run: a failure replays exactly from its seed.
(Timers with *equal* deadlines run in an order fixed by the program but not necessarily the
order they were set, as in any asyncio loop; ``MemoryNetwork`` orders its own deliveries.)

Limits, stated so nobody is surprised:

* Threads cannot wake the loop on their own schedule, so the loop has none: a function
  handed to ``run_in_executor`` (and so ``asyncio.to_thread``, which group commit uses for
  its fsync rounds) runs at once on the loop's own thread, in call order, and its future is
  already done when returned. Such a function must not wait for the loop. When nothing is
  ready and no timer is scheduled the loop raises ``SimulationDeadlock`` rather than wait
  forever.
* Real sockets are polled without blocking, so they work but are not deterministic.
* ``time_limit_s`` bounds virtual time; passing it raises ``SimulationTimeLimit``.

``run_simulation(main, seed)`` builds the loop, a ``Simulation`` (seed, seeded random
generator, the loop's ``Clock`` and a ``MemoryNetwork`` seeded from the same seed), runs
``main(sim)`` to completion and adds the seed to any exception it raises.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar, TypeVarTuple

from blocks.core.errors import BlocksError, InvalidArgument
from blocks.core.memory_network import MemoryNetwork

__all__ = [
    "DEFAULT_TIME_LIMIT_S",
    "DEFAULT_WALL_START_MS",
    "SimClock",
    "Simulation",
    "SimulationDeadlock",
    "SimulationTimeLimit",
    "VirtualTimeLoop",
    "run_simulation",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

DEFAULT_TIME_LIMIT_S = 7 * 24 * 3600.0
"""Default bound on simulated time (one week): a livelocked retry loop stops here."""

DEFAULT_WALL_START_MS = 1_700_000_000_000
"""Wall-clock reading at virtual time zero (a fixed date, so runs replay exactly)."""


class SimulationDeadlock(BlocksError):
    """Nothing is ready to run and no timer is pending: the program can never make progress."""


class SimulationTimeLimit(BlocksError):
    """Virtual time passed the simulation's ``time_limit_s``."""


class SimClock:
    """The virtual loop's time as a blocks ``Clock`` (``now_ms``, ``monotonic``).

    ``monotonic()`` is virtual seconds since the loop started; ``now_ms()`` is
    ``wall_start_ms`` plus the same elapsed time in whole milliseconds.
    """

    __slots__ = ("_now_s", "_wall_start_ms")

    def __init__(self, wall_start_ms: int = DEFAULT_WALL_START_MS) -> None:
        if wall_start_ms < 0:
            raise InvalidArgument(f"wall_start_ms must be >= 0, got {wall_start_ms}")
        self._wall_start_ms = wall_start_ms
        self._now_s = 0.0

    def now_ms(self) -> int:
        return self._wall_start_ms + int(self._now_s * 1000.0)

    def monotonic(self) -> float:
        return self._now_s

    def _advance(self, seconds: float) -> None:
        assert seconds >= 0.0, seconds
        self._now_s += seconds

    def __repr__(self) -> str:
        return f"SimClock(monotonic={self._now_s:.6f})"


class _AutojumpSelector(selectors.BaseSelector):
    """A selector that never sleeps: waiting ``timeout`` seconds means moving the clock."""

    def __init__(self, clock: SimClock, time_limit_s: float) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock
        self._time_limit_s = time_limit_s

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise SimulationDeadlock(
                "no task is ready and no timer is scheduled: every task waits on something "
                "that will never happen"
            )
        if self._clock.monotonic() + timeout > self._time_limit_s:
            raise SimulationTimeLimit(
                f"virtual time would pass the limit of {self._time_limit_s} s"
            )
        self._clock._advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock jumps to the next timer whenever nothing is ready."""

    def __init__(
        self,
        *,
        wall_start_ms: int = DEFAULT_WALL_START_MS,
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    ) -> None:
        self.clock = SimClock(wall_start_ms)
        super().__init__(selector=_AutojumpSelector(self.clock, time_limit_s))
        if not time_limit_s > 0:
            self.close()  # the base class must exist before we refuse, or its __del__ fails
            raise InvalidArgument(f"time_limit_s must be > 0, got {time_limit_s}")

    def time(self) -> float:
        return self.clock.monotonic()

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[*Ts], T], *args: *Ts
    ) -> asyncio.Future[T]:
        """Run ``func`` now, inline (see the module's limits): a worker thread's finish would
        reach the loop at a moment no seed decides."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as error:  # handed to the awaiting task, as a thread's would be
            future.set_exception(error)
        return future


@dataclass(frozen=True, slots=True)
class Simulation:
    """What a simulated program gets: its seed and the seeded tools built from it.

    ``random`` and ``network`` draw from separate streams derived from ``seed``, so extra
    application randomness does not shift the network's fault decisions.
    """

    seed: int
    random: random.Random
    clock: SimClock
    network: MemoryNetwork
    loop: VirtualTimeLoop


def run_simulation(
    main: Callable[[Simulation], Awaitable[T]],
    seed: int,
    *,
    wall_start_ms: int = DEFAULT_WALL_START_MS,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> T:
    """Run ``main(sim)`` on a fresh ``VirtualTimeLoop`` and return its result.

    Any exception ``main`` raises propagates with a note naming the seed, so a failure can be
    replayed with ``run_simulation(main, seed)``.
    """
    loop = VirtualTimeLoop(wall_start_ms=wall_start_ms, time_limit_s=time_limit_s)
    sim = Simulation(
        seed=seed,
        random=random.Random(f"app:{seed}"),
        clock=loop.clock,
        network=MemoryNetwork(seed=seed),
        loop=loop,
    )
    try:
        with asyncio.Runner(loop_factory=lambda: loop) as runner:
            return runner.run(_as_coroutine(main(sim)))
    except BaseException as error:
        error.add_note(f"simulation seed={seed} (replay with run_simulation(main, {seed}))")
        raise


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
