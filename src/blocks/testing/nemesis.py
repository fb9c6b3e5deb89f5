"""A seeded nemesis: a schedule of process, network and clock faults for a process cluster.

``plan(seed, nodes, kinds, steps)`` is pure: the same seed gives the same list of ``Fault``s
(``random.Random(seed)`` picks each fault's kind, node, hold time and amount). ``Nemesis``
carries a plan out against a ``ProcessCluster`` (and a ``Network`` for network faults), one
fault at a time: apply it, hold it while the workload runs, heal it, wait until the node
answers again. One fault at a time keeps a majority up, which is all the blocks here claim
to survive; a plan that should break that claim is a different test.

The seed is the replay: ``describe()`` gives ``seed=S`` and every fault, for the failure
message; ``nemesis_seeds()`` returns the seeds a test should run: its own few by default,
``BLOCKS_NEMESIS_SEED=S`` to replay one, ``BLOCKS_SOAK_SEEDS=N`` for N seeds of a soak run
(from ``BLOCKS_SOAK_FIRST_SEED``, default 1000).
"""

from __future__ import annotations

import asyncio
import enum
import os
import random
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from blocks.core.clock import CLOCK_OFFSET_ENV
from blocks.core.errors import InvalidArgument
from blocks.testing.disk import FsyncFaults
from blocks.testing.network import Network
from blocks.testing.process import ProcessCluster

__all__ = [
    "NETWORK_FAULTS",
    "PROCESS_FAULTS",
    "SEED_ENV",
    "SOAK_SEEDS_ENV",
    "Fault",
    "FaultKind",
    "FaultRunner",
    "Nemesis",
    "nemesis_seeds",
    "nemesis_steps",
    "plan",
    "run_during",
    "soak_line",
]

T = TypeVar("T")

SEED_ENV = "BLOCKS_NEMESIS_SEED"
STEPS_ENV = "BLOCKS_NEMESIS_STEPS"
SOAK_SEEDS_ENV = "BLOCKS_SOAK_SEEDS"
SOAK_FIRST_SEED_ENV = "BLOCKS_SOAK_FIRST_SEED"
SOAK_SEEDS_MAX = 100_000
SOAK_REPORT_ENV = "BLOCKS_SOAK_REPORT"  # a file each soak line is appended to
WORKLOAD_DRAIN_S = 60.0
STEPS_MAX = 1000
CLOCK_JUMP_MS_MAX = 10 * 60 * 1000
DELAY_S_MAX = 0.5


class FaultKind(enum.Enum):
    KILL = "kill"  # kill -9, down for the hold, then started on the same data
    RESTART = "restart"  # kill -9 and started at once
    PAUSE = "pause"  # SIGSTOP for the hold, then SIGCONT
    WIPE = "wipe"  # kill -9, data directory deleted, started empty
    ISOLATE = "isolate"  # cut off from every peer, both ways, for the hold
    ISOLATE_ONE_WAY = "isolate-one-way"  # its outbound bytes lost; it still hears peers
    DELAY = "delay"  # every byte to and from it delayed by ``amount`` seconds
    CLOCK_JUMP = "clock-jump"  # restarted with its wall clock ``amount`` ms off, then back
    FSYNC_EIO = "fsync-eio"  # its fsyncs fail with EIO for the hold; healed by a restart


PROCESS_FAULTS = (FaultKind.KILL, FaultKind.RESTART, FaultKind.PAUSE)
NETWORK_FAULTS = (FaultKind.ISOLATE, FaultKind.ISOLATE_ONE_WAY, FaultKind.DELAY)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    node: str
    hold_s: float
    amount: float = 0.0  # DELAY: seconds; CLOCK_JUMP: milliseconds (may be negative)

    def describe(self) -> str:
        extra = ""
        if self.kind is FaultKind.DELAY:
            extra = f" {self.amount:.3f}s"
        elif self.kind is FaultKind.CLOCK_JUMP:
            extra = f" {int(self.amount):+d}ms"
        return f"{self.kind.value} {self.node}{extra} for {self.hold_s:.2f}s"


def plan(
    seed: int,
    nodes: Sequence[str],
    kinds: Sequence[FaultKind],
    steps: int,
    *,
    hold_s: tuple[float, float] = (0.2, 1.0),
) -> list[Fault]:
    """``steps`` faults drawn from ``random.Random(seed)``; the same inputs, the same plan."""
    if not nodes or not kinds:
        raise InvalidArgument("a plan needs nodes and fault kinds")
    if not 0 <= steps <= STEPS_MAX:
        raise InvalidArgument(f"steps must be 0..{STEPS_MAX}, got {steps}")
    low, high = hold_s
    if not 0 <= low <= high:
        raise InvalidArgument(f"hold_s must be (low, high) with 0 <= low <= high, got {hold_s}")
    rng = random.Random(seed)
    faults = []
    for _ in range(steps):
        kind = rng.choice(list(kinds))
        node = rng.choice(list(nodes))
        hold = round(rng.uniform(low, high), 3)
        amount = 0.0
        if kind is FaultKind.DELAY:
            amount = round(rng.uniform(0.01, DELAY_S_MAX), 3)
        elif kind is FaultKind.CLOCK_JUMP:
            amount = float(rng.choice((-1, 1)) * rng.randint(1000, CLOCK_JUMP_MS_MAX))
        faults.append(Fault(kind, node, hold, amount))
    return faults


def nemesis_steps(default: int = 2, soak: int = 6) -> int:
    """Faults per seed: ``BLOCKS_NEMESIS_STEPS`` if set, else ``soak`` in a soak run
    (``BLOCKS_SOAK_SEEDS`` set), else ``default`` (a bounded test in ``make test``)."""
    if steps := os.environ.get(STEPS_ENV, "").strip():
        return int(steps)
    return soak if os.environ.get(SOAK_SEEDS_ENV, "").strip() else default


def nemesis_seeds(default: Sequence[int]) -> list[int]:
    """The seeds to run: ``BLOCKS_NEMESIS_SEED`` (one), else ``BLOCKS_SOAK_SEEDS`` (N from
    ``BLOCKS_SOAK_FIRST_SEED``), else ``default``."""
    if one := os.environ.get(SEED_ENV, "").strip():
        return [int(one)]
    if count := os.environ.get(SOAK_SEEDS_ENV, "").strip():
        first = int(os.environ.get(SOAK_FIRST_SEED_ENV, "1000"))
        return list(range(first, first + min(int(count), SOAK_SEEDS_MAX)))
    return list(default)


class FaultRunner:
    """Carries out a plan one fault at a time: apply, hold for ``hold_s``, heal, then leave
    the target alone for ``calm_s``; ``lead_s`` of calm comes before the first fault.

    ``run()`` blocks (call it in a thread beside an asyncio workload, see ``run_during``);
    ``stop()`` ends it after the fault in progress is healed. ``survived`` lists the faults
    applied and healed. A subclass says what applying and healing a fault means for its
    target (``_apply``, ``_heal``) and names itself in ``describe()`` (``label``).
    """

    label = "nemesis"

    def __init__(
        self, seed: int, faults: list[Fault], *, calm_s: float, lead_s: float = 0.0
    ) -> None:
        self.seed = seed
        self.faults = faults
        self.calm_s = calm_s
        self.lead_s = lead_s
        self.survived: list[Fault] = []
        self._stop = threading.Event()

    def describe(self) -> str:
        faults = "; ".join(f.describe() for f in self.faults) or "none"
        return f"{self.label} seed={self.seed} (replay: {SEED_ENV}={self.seed}): {faults}"

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        if self.lead_s > 0:  # lets the workload have acknowledged work before a fault
            self._stop.wait(self.lead_s)
        for fault in self.faults:
            if self._stop.is_set():
                return
            self._apply(fault)
            try:
                self._stop.wait(fault.hold_s)
            finally:
                self._heal(fault)
            self.survived.append(fault)
            self._stop.wait(self.calm_s)

    def _apply(self, fault: Fault) -> None:
        raise NotImplementedError

    def _heal(self, fault: Fault) -> None:
        raise NotImplementedError


class Nemesis(FaultRunner):
    """Runs ``plan(seed, cluster.names, kinds, steps)`` against ``cluster``.

    After each healed fault the cluster is left alone for ``calm_s``, so the workload makes
    progress between faults and a block that stays stuck after a fault is seen.
    ``run()`` blocks (call it in a thread beside an asyncio workload); ``stop()`` ends it
    after the fault in progress is healed. ``survived`` lists the faults applied and healed.
    Network kinds need ``network``, ``FSYNC_EIO`` an ``FsyncFaults`` per node (installed
    before the nodes started); ``InvalidArgument`` if they are asked for without them.
    """

    def __init__(
        self,
        cluster: ProcessCluster,
        *,
        seed: int,
        kinds: Sequence[FaultKind] = PROCESS_FAULTS,
        steps: int = 3,
        hold_s: tuple[float, float] = (0.2, 0.8),
        network: Network | None = None,
        nodes: Sequence[str] | None = None,
        calm_s: float = 0.5,
        fsync_faults: Mapping[str, FsyncFaults] | None = None,
    ) -> None:
        if network is None and any(kind in NETWORK_FAULTS for kind in kinds):
            raise InvalidArgument("network faults need a Network")
        self.fsync_faults = dict(fsync_faults or {})
        if FaultKind.FSYNC_EIO in kinds and set(nodes or cluster.names) - set(self.fsync_faults):
            raise InvalidArgument("fsync faults need an FsyncFaults for every node")
        self.cluster = cluster
        self.network = network
        faults = plan(seed, nodes or cluster.names, kinds, steps, hold_s=hold_s)
        super().__init__(seed, faults, calm_s=calm_s)

    def _apply(self, fault: Fault) -> None:
        cluster, node = self.cluster, fault.node
        match fault.kind:
            case FaultKind.KILL:
                cluster.kill(node)
            case FaultKind.RESTART:
                cluster.restart(node)
            case FaultKind.PAUSE:
                cluster.pause(node)
            case FaultKind.WIPE:
                cluster.kill(node)
                cluster.wipe(node)
                cluster.start(node)
            case FaultKind.CLOCK_JUMP:
                cluster.set_env(node, {CLOCK_OFFSET_ENV: str(int(fault.amount))})
                cluster.restart(node)
            case FaultKind.ISOLATE | FaultKind.ISOLATE_ONE_WAY:
                assert self.network is not None
                self.network.isolate(node, one_way=fault.kind is FaultKind.ISOLATE_ONE_WAY)
            case FaultKind.DELAY:
                assert self.network is not None
                self.network.delay(node, fault.amount)
            case FaultKind.FSYNC_EIO:
                self.fsync_faults[node].fail()

    def _heal(self, fault: Fault) -> None:
        cluster, node = self.cluster, fault.node
        match fault.kind:
            case FaultKind.KILL:
                cluster.start(node)
            case FaultKind.PAUSE:
                cluster.resume(node)
                cluster.wait_healthy(node)
            case FaultKind.CLOCK_JUMP:
                cluster.set_env(node, {})
                cluster.restart(node)
            case FaultKind.ISOLATE | FaultKind.ISOLATE_ONE_WAY | FaultKind.DELAY:
                assert self.network is not None
                self.network.heal()
            case FaultKind.FSYNC_EIO:
                self.fsync_faults[node].heal()
                cluster.restart(node)  # after a failed fsync the page cache is suspect
            case FaultKind.RESTART | FaultKind.WIPE:
                pass


class _Runs(Protocol):
    def run(self) -> None: ...


class _Survivor(Protocol):
    @property
    def seed(self) -> int: ...

    @property
    def survived(self) -> list[Fault]: ...


async def run_during(nemesis: _Runs, workload: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``nemesis`` in a thread while ``workload(done)`` runs on this loop; ``done`` is set
    when the nemesis has healed its last fault (or failed), and the workload should then
    finish its operations in flight and return. Its result is returned; a nemesis error is
    raised after the workload has drained (bounded by ``WORKLOAD_DRAIN_S``)."""
    done = asyncio.Event()
    task = asyncio.ensure_future(workload(done))
    try:
        await asyncio.to_thread(nemesis.run)
    finally:
        done.set()
        finished, _ = await asyncio.wait([task], timeout=WORKLOAD_DRAIN_S)
        if not finished:
            task.cancel()
    return await task


def soak_line(block: str, nemesis: _Survivor, outcome: str) -> str:
    """One line saying which seed survived which faults with what outcome; printed, and
    appended to the file ``BLOCKS_SOAK_REPORT`` names, if any."""
    faults = ", ".join(f.describe() for f in nemesis.survived) or "none"
    line = f"{block} seed={nemesis.seed} survived [{faults}] {outcome}"
    print(line, flush=True)
    if path := os.environ.get(SOAK_REPORT_ENV, "").strip():
        with open(path, "a", encoding="utf-8") as report:
            report.write(line + "\n")
    return line
