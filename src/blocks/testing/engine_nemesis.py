"""A seeded nemesis for engine processes (``redis-server``, ``nats-server``), and an audit of
the errors an adapter raises under it.

Theory of operation
-------------------
``EngineNemesis`` carries out the same pure ``plan(seed, ...)`` as the process cluster's
``Nemesis``, against ``EngineProcess``es (``blocks.testing.engines``) instead of a
``ProcessCluster``: one fault at a time, apply, hold while the workload runs, heal, wait until
the engine answers again, then a calm period so the workload makes progress between faults.
The kinds it knows are the process faults:

* ``kill``: SIGKILL; the engine stays down for the hold, then starts on the same files;
* ``restart``: SIGKILL and start at once (a crash and a supervisor's restart);
* ``pause``: SIGSTOP for the hold, then SIGCONT: the engine keeps its connections and answers
  nothing, so an adapter that waits without a bound hangs here.

``ErrorAudit`` wraps each adapter call of a workload: it bounds the call by ``hang_s`` (a call
still running then is a hang) and sorts every exception into the block's errors the adapter
may raise under faults (``Unavailable`` and ``Timeout`` by default) and everything else (an
engine client's exception leaking, or a block error that a fault should not cause). The
workload records its history as usual (``History.call`` around ``audit.guard(...)``), and the
test asserts both the history checker's verdict and ``audit.valid``. ``open_loop`` drives
such calls at a steady rate with a bound on how many are in flight.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from blocks.core.errors import InvalidArgument, Timeout, Unavailable
from blocks.testing.engines import EngineProcess
from blocks.testing.nemesis import Fault, FaultKind, FaultRunner, plan, run_during, soak_line

__all__ = [
    "ENGINE_FAULTS",
    "HANG_S_DEFAULT",
    "IN_FLIGHT_MAX",
    "EngineNemesis",
    "ErrorAudit",
    "Hung",
    "engine_soak_line",
    "open_loop",
    "run_engine_nemesis",
]

T = TypeVar("T")

ENGINE_FAULTS = (FaultKind.KILL, FaultKind.RESTART, FaultKind.PAUSE)
HANG_S_DEFAULT = 60.0  # far above any adapter's own request bound, even on a loaded machine
RESUME_TIMEOUT_S = 30.0
RESUME_POLL_S = 0.05
EXAMPLES_MAX = 5  # error messages kept per kind, for the failure message
IN_FLIGHT_MAX = 16  # calls of one open loop in flight at once
SPAWN_INTERVAL_S = 0.01


class EngineNemesis(FaultRunner):
    """Runs ``plan(seed, list(engines), kinds, steps)`` against named engine processes.

    ``engines`` maps a name (what the plan draws) to a started ``EngineProcess``. ``run()``
    blocks (call it in a thread beside an asyncio workload, see ``run_engine_nemesis``);
    ``stop()`` ends it after the fault in progress is healed. ``survived`` lists the faults
    applied and healed. The engines are left alone for ``lead_s`` (default ``calm_s``)
    before the first fault and ``calm_s`` after each. Kinds other than ``ENGINE_FAULTS``
    raise ``InvalidArgument``.
    """

    label = "engine nemesis"

    def __init__(
        self,
        engines: Mapping[str, EngineProcess],
        *,
        seed: int,
        kinds: Sequence[FaultKind] = ENGINE_FAULTS,
        steps: int = 3,
        hold_s: tuple[float, float] = (0.2, 0.8),
        calm_s: float = 0.5,
        lead_s: float | None = None,
    ) -> None:
        unknown = [kind.value for kind in kinds if kind not in ENGINE_FAULTS]
        if unknown:
            raise InvalidArgument(f"an engine nemesis injects only process faults, not {unknown}")
        self.engines = dict(engines)
        faults = plan(seed, sorted(self.engines), kinds, steps, hold_s=hold_s)
        super().__init__(seed, faults, calm_s=calm_s, lead_s=calm_s if lead_s is None else lead_s)

    def _apply(self, fault: Fault) -> None:
        engine = self.engines[fault.node]
        match fault.kind:
            case FaultKind.KILL:
                engine.kill()
            case FaultKind.RESTART:
                engine.kill()
                engine.start()
            case FaultKind.PAUSE:
                _signal(engine, signal.SIGSTOP)
            case _:  # refused in __init__
                raise AssertionError(f"unexpected fault {fault}")

    def _heal(self, fault: Fault) -> None:
        engine = self.engines[fault.node]
        match fault.kind:
            case FaultKind.KILL:
                engine.start()
            case FaultKind.PAUSE:
                _signal(engine, signal.SIGCONT)
                _wait_ready(engine)
            case _:
                pass


def _signal(engine: EngineProcess, signum: signal.Signals) -> None:
    pid = engine.pid
    assert pid is not None and engine.running, f"{engine.name} is not running"
    os.kill(pid, signum)


def _wait_ready(engine: EngineProcess) -> None:
    deadline = time.monotonic() + RESUME_TIMEOUT_S
    while not engine.probe():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{engine.name} did not answer {RESUME_TIMEOUT_S} s after SIGCONT")
        time.sleep(RESUME_POLL_S)


run_engine_nemesis = run_during
"""``nemesis.run_during`` for an ``EngineNemesis``: the workload gets ``done`` once the last
fault is healed, and a nemesis error is raised after the workload has drained."""


async def open_loop(
    call: Callable[[int], Awaitable[bool]],
    done: asyncio.Event,
    deadline: float,
    *,
    after_acks: int = 20,
    in_flight_max: int = IN_FLIGHT_MAX,
    interval_s: float = SPAWN_INTERVAL_S,
) -> None:
    """Start ``call(0)``, ``call(1)``, ... one every ``interval_s``, at most ``in_flight_max``
    at once, until ``done`` is set and ``after_acks`` calls started after it returned True;
    then await the ones still running. ``deadline`` is the loop's time by which that must
    have happened (``AssertionError`` otherwise: the adapter stayed stuck after the faults).

    An open loop keeps calls starting while earlier ones wait out a crash (a call in flight
    when an engine dies may wait for its whole request timeout), so the workload also sees
    what an adapter does with calls made while the engine is down, paused or restarting.
    """
    loop = asyncio.get_running_loop()
    in_flight: set[asyncio.Task[bool]] = set()
    acknowledged_after = 0

    def finished(task: asyncio.Task[bool], after: bool) -> None:
        nonlocal acknowledged_after
        in_flight.discard(task)
        if after and not task.cancelled() and task.exception() is None and task.result():
            acknowledged_after += 1

    index = 0
    try:
        while acknowledged_after < after_acks:
            assert loop.time() < deadline, "no acknowledgements after the faults were healed"
            if len(in_flight) < in_flight_max:
                task = asyncio.ensure_future(call(index))
                in_flight.add(task)
                task.add_done_callback(functools.partial(finished, after=done.is_set()))
                index += 1
            await asyncio.sleep(interval_s)
    finally:
        await asyncio.gather(*in_flight, return_exceptions=True)


class Hung(Exception):
    """An adapter call was still running ``hang_s`` after it began."""


@dataclass(slots=True)
class ErrorAudit:
    """What each guarded call ended with: counts per exception type, hangs, and the
    exceptions that are not among ``allowed``.

    ``allowed``: the block errors a call may raise while the engine is down, paused or
    restarting. ``valid`` when no call hung and none raised anything else.
    """

    allowed: tuple[type[BaseException], ...] = (Unavailable, Timeout)
    hang_s: float = HANG_S_DEFAULT
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    hangs: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    async def guard(self, awaitable: Awaitable[T], what: str) -> T:
        """Await ``awaitable`` within ``hang_s``; record how it ended; re-raise its error
        (a hang as ``Hung``)."""
        self.calls += 1
        scope = asyncio.timeout(self.hang_s)
        try:
            async with scope:
                return await awaitable
        except Exception as error:
            if scope.expired():
                self.errors["hang"] += 1
                self.hangs.append(f"{what}: no answer within {self.hang_s} s")
                raise Hung(what) from error
            self.errors[type(error).__name__] += 1
            if not isinstance(error, self.allowed):
                self.foreign.append(f"{what}: {type(error).__module__}.{error!r}")
            raise

    @property
    def valid(self) -> bool:
        return not self.hangs and not self.foreign

    def describe(self) -> str:
        errors = ", ".join(f"{name}={n}" for name, n in sorted(self.errors.items())) or "none"
        text = f"calls={self.calls} errors: {errors}"
        if self.hangs:
            text += f"; hangs: {self.hangs[:EXAMPLES_MAX]}"
        if self.foreign:
            text += f"; not the block's fault errors: {self.foreign[:EXAMPLES_MAX]}"
        return text


engine_soak_line = soak_line
"""``nemesis.soak_line`` for an ``EngineNemesis``: the same line, printed and appended to the
file ``BLOCKS_SOAK_REPORT`` names, if any."""
