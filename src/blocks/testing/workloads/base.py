"""What every workload shares: the verdict, and one call that runs a workload under a nemesis.

A workload drives a block through its public client while the nemesis works, recording every
operation in a ``History``; once the nemesis has healed its last fault it reads the final
state and returns a ``Verdict``. ``run_under_nemesis`` is the whole test body: start the
cluster, run both, print the soak line, and raise ``AssertionError`` (with the seed, the
faults and every node's log attached) unless the verdict is valid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from blocks.testing.history import History, OpType, UniqueValuesCheck, check_unique_values
from blocks.testing.nemesis import Nemesis, run_during, soak_line
from blocks.testing.process import ProcessCluster

__all__ = [
    "FINAL_ATTEMPTS",
    "Verdict",
    "Workload",
    "gather_bounded",
    "judge",
    "retrying",
    "run_under_nemesis",
]

FINAL_ATTEMPTS = 30  # reads of the final state retried while the healed cluster settles
FINAL_RETRY_S = 0.2
FINAL_CONCURRENCY = 32
ERROR_BACKOFF_S = 0.05  # a workload's pause after a failed call, so a dead node is not spun on
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Verdict:
    """``check`` (nothing acknowledged lost, nothing invented) plus block-specific
    ``problems`` (duplicates, order, convergence); valid when both are clean."""

    check: UniqueValuesCheck
    operations: int  # completed operations in the history (ok, fail and info)
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def valid(self) -> bool:
        return self.check.valid and not self.problems

    def describe(self) -> str:
        extra = f" problems: {list(self.problems[:5])}" if self.problems else ""
        return f"operations={self.operations} {self.check.describe()}{extra}"


class Workload(Protocol):
    history: History

    async def run(self, done: asyncio.Event) -> None:
        """Issue operations until ``done`` is set, then let those in flight finish."""
        ...

    async def verify(self) -> Verdict:
        """Read the final state (the cluster is healed) and judge the history."""
        ...

    async def close(self) -> None: ...


def run_under_nemesis(
    block: str,
    cluster: ProcessCluster,
    nemesis: Nemesis,
    make_workload: Callable[[], Awaitable[Workload]],
    *,
    acknowledged_min: int = 1,
) -> Verdict:
    """Start every stopped node, build the workload (``make_workload`` is awaited on the
    test's event loop), run it during the nemesis, verify; returns the verdict or raises ``AssertionError`` naming the seed and carrying the logs."""

    async def body() -> Verdict:
        workload = await make_workload()
        try:
            await run_during(nemesis, workload.run)
            return await workload.verify()
        finally:
            await workload.close()

    with cluster.failure_notes(nemesis.describe()):
        cluster.start_all()
        verdict = asyncio.run(body())
        soak_line(block, nemesis, verdict.describe())
        if not verdict.valid:
            raise AssertionError(f"{block}: {verdict.describe()}")
        if verdict.check.acknowledged < acknowledged_min:
            raise AssertionError(f"{block}: only {verdict.check.acknowledged} acknowledged")
    return verdict


def judge(history: History, final: list[object], problems: list[str] | None = None) -> Verdict:
    """The verdict of ``check_unique_values`` on ``final`` plus ``problems``."""
    completed = sum(1 for op in history.ops if op.type is not OpType.INVOKE)
    check = check_unique_values(history, final)
    return Verdict(check, completed, tuple(problems or ()))


async def retrying(call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` until it succeeds, at most ``FINAL_ATTEMPTS`` times (for final reads while
    a healed cluster settles); the last error is raised."""
    for attempt in range(FINAL_ATTEMPTS):
        try:
            return await call()
        except Exception:
            if attempt == FINAL_ATTEMPTS - 1:
                raise
            await asyncio.sleep(FINAL_RETRY_S)
    raise AssertionError("unreachable")


async def gather_bounded(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` with at most ``FINAL_CONCURRENCY`` at once; results in order."""
    limit = asyncio.Semaphore(FINAL_CONCURRENCY)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with limit:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))
