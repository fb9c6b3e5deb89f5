"""Group commit for ``blocks.core.log``: asyncio appenders share fsyncs, across logs too.

Theory of operation
-------------------
An appender in ``batch`` mode writes its records to the page cache at once (a cheap, short
system call under the log's lock) and then awaits ``wait_durable(target)``, where ``target``
is one past its last offset. The first waiter starts a flush task; the task waits until the
window of ``batch_delay_ms`` ends, or sooner once ``batch_records_max`` records are pending
in one log, then runs one *round* of fsyncs (in a worker thread, so that the event loop keeps
taking appends meanwhile, unless rounds are quick: see below) and wakes every waiter whose
target the round covered. Waiters that arrived during the round wait for the next one. So N appenders arriving together cost one or two
fsyncs, not N, and no appender waits much longer than one window plus one round.

Where the round runs adapts to the disk. A round that has recently been quick (a moving
average under ``inline_below_ms``, 0.5 ms by default) runs on the event loop itself: handing
it to a worker thread and back costs two thread wake-ups, which on a fast disk (0.1 ms per
``fdatasync``) took longer than the fsync, and a pub-sub broker produced about 20% more
durable records per second without them. A slow disk's rounds run in the worker thread, so
the loop keeps serving reads and taking appends while the disk works; every round updates
the average (weight 0.2 to the newest round), so a disk that slows down moves the rounds off
the loop after a few slow rounds or one very slow one, and a disk that recovers brings them
back. The rejected alternatives: always a thread (the hand-off dominates on fast disks) and
always inline (one slow fsync stalls every connection of the process).

A ``GroupCommitter`` may serve several logs (``SegmentLog(commit_group=...)``): a broker's
partitions, say. A round then fsyncs every member log that has waiters, one after another
in the same round, and wakes all their waiters together, where separate committers would
run their rounds side by side and contend for the file system's journal (four
``fdatasync`` calls in a row took 0.40 ms on the development VM, one took 0.12 ms). A log's
own committer is a group of one.

The task is the thin driver; the decisions live in the logs (what is pending, what one fsync
made durable). A waiter that is cancelled stops waiting, but its records stay written and are
made durable by the next fsync anyway. If a log's fsync fails, every waiter of that log gets
the error (their records are *not* acknowledged durable); the other members are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from blocks.core.clock import Clock
from blocks.core.errors import FailedPrecondition, InvalidArgument

__all__ = ["CommitMember", "GroupCommitter"]


class CommitMember:
    """One log's place in a ``GroupCommitter``.

    ``sync`` makes everything written so far durable and returns the new durable offset (in
    a worker thread or on the event loop); ``durable`` and ``pending`` read the log's durable
    offset and number of written-but-not-durable records.
    """

    __slots__ = ("_group", "durable", "pending", "sync", "waiters")

    def __init__(
        self,
        group: GroupCommitter,
        sync: Callable[[], int],
        durable: Callable[[], int],
        pending: Callable[[], int],
    ) -> None:
        self._group = group
        self.sync = sync
        self.durable = durable
        self.pending = pending
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def wait_durable(self, target: int) -> None:
        """Return once every offset below ``target`` is durable; raise if the fsync failed."""
        await self._group.wait_durable(self, target)


class GroupCommitter:
    """Shares fsync rounds among the asyncio waiters of its member logs, on one loop at a time."""

    __slots__ = (
        "_delay_s",
        "_full",
        "_inline_below_s",
        "_loop",
        "_members",
        "_now_s",
        "_records_max",
        "_task",
        "fsync_rounds",
        "inline_rounds",
        "round_seconds",
    )

    def __init__(
        self,
        batch_delay_ms: float = 0.0,
        batch_records_max: int = 4096,
        inline_below_ms: float = 0.5,
        *,
        clock: Clock | None = None,
    ) -> None:
        if batch_delay_ms < 0 or batch_records_max < 1 or inline_below_ms < 0:
            raise InvalidArgument(
                "batch_delay_ms and inline_below_ms must be >= 0, batch_records_max >= 1"
            )
        self._delay_s = batch_delay_ms / 1000.0
        self._records_max = batch_records_max
        self._inline_below_s = inline_below_ms / 1000.0
        # Times rounds (the clock's monotonic reading; perf_counter by default). Tests pass a
        # ManualClock that their fake fsync advances, so the inline/thread choice does not
        # depend on how busy the machine is.
        self._now_s: Callable[[], float] = (
            clock.monotonic if clock is not None else time.perf_counter
        )
        self.round_seconds: float | None = None  # moving average; None until a round ran
        self.inline_rounds = 0  # rounds run on the event loop; for tests and metrics
        self._members: list[CommitMember] = []  # members with waiters, in arrival order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.fsync_rounds = 0  # rounds this committer ran; for tests and metrics

    def member(
        self, sync: Callable[[], int], durable: Callable[[], int], pending: Callable[[], int]
    ) -> CommitMember:
        """A new member log's handle (see ``CommitMember``)."""
        return CommitMember(self, sync, durable, pending)

    async def wait_durable(self, member: CommitMember, target: int) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._members and self._loop is not None and not self._loop.is_closed():
                raise FailedPrecondition("the log's group commit is in use on another loop")
            self._loop, self._full, self._task = loop, asyncio.Event(), None
            for stale in self._members:
                stale.waiters.clear()
            self._members.clear()
        if member.durable() >= target:
            return
        assert self._full is not None
        future: asyncio.Future[None] = loop.create_future()
        if not member.waiters:
            self._members.append(member)
        member.waiters.append((target, future))
        if member.pending() >= self._records_max:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(self._full))
        await future

    async def _run(self, full: asyncio.Event) -> None:
        while self._members:
            if not full.is_set() and self._delay_s > 0:
                with contextlib.suppress(TimeoutError):  # the window ended
                    await asyncio.wait_for(full.wait(), timeout=self._delay_s)
            full.clear()
            members = list(self._members)
            average = self.round_seconds
            if average is not None and average < self._inline_below_s:
                outcomes, elapsed = self._timed_round(members)
                self.inline_rounds += 1
            else:
                outcomes, elapsed = await asyncio.to_thread(self._timed_round, members)
            self.round_seconds = elapsed if average is None else 0.8 * average + 0.2 * elapsed
            self.fsync_rounds += 1
            for member, outcome in zip(members, outcomes, strict=True):
                _resolve(member, outcome)
            self._members = [m for m in self._members if m.waiters]

    def _timed_round(self, members: list[CommitMember]) -> tuple[list[int | BaseException], float]:
        """One round and how long its fsyncs took, timed where they run: a round handed to
        a worker thread must not count the hand-off, or on busy cores the wait for the thread
        keeps the average over ``inline_below_ms`` and the rounds never come back inline."""
        started = self._now_s()
        outcomes = _sync_all(members)
        return outcomes, self._now_s() - started


def _sync_all(members: list[CommitMember]) -> list[int | BaseException]:
    """One round (in a worker thread or on the loop): each member's fsync, or its error."""
    outcomes: list[int | BaseException] = []
    for member in members:
        try:
            outcomes.append(member.sync())
        except Exception as error:
            outcomes.append(error)
    return outcomes


def _resolve(member: CommitMember, outcome: int | BaseException) -> None:
    """Wake the member's waiters the round covered (all of them, with the error, if it failed)."""
    still_waiting: list[tuple[int, asyncio.Future[None]]] = []
    for target, future in member.waiters:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        elif target <= outcome:
            future.set_result(None)
        else:
            still_waiting.append((target, future))
    member.waiters = still_waiting
