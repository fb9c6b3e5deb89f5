"""Group commit for ``blocks.core.log``: asyncio appenders in one window share one fsync.

Theory of operation
-------------------
An appender in ``batch`` mode writes its records to the page cache at once (a cheap, short
system call under the log's lock) and then awaits ``wait_durable(target)``, where ``target``
is one past its last offset. The first waiter starts a flush task; the task waits until the
window of ``batch_delay_ms`` ends, or sooner once ``batch_records_max`` records are pending,
then runs one fsync in a worker thread (so the event loop keeps taking appends meanwhile) and
wakes every waiter whose target the fsync covered. Waiters that arrived during the fsync wait
for the next round. So N appenders arriving together cost one or two fsyncs, not N, and no
appender waits much longer than one window plus one fsync.

The task is the thin driver; the decisions live in the log (what is pending, what one fsync
made durable). A waiter that is cancelled stops waiting, but its records stay written and are
made durable by the next fsync anyway. If the fsync fails, every waiter gets the error: their
records are *not* acknowledged durable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from blocks.core.errors import FailedPrecondition

__all__ = ["GroupCommitter"]


class GroupCommitter:
    """Shares fsyncs among concurrent asyncio waiters of one log, on one event loop at a time.

    ``sync`` makes everything written so far durable and returns the new durable offset (it
    runs in a worker thread); ``durable`` and ``pending`` read the log's durable offset and
    number of written-but-not-durable records.
    """

    __slots__ = (
        "_delay_s",
        "_durable",
        "_full",
        "_loop",
        "_pending",
        "_records_max",
        "_sync",
        "_task",
        "_waiters",
        "fsync_rounds",
    )

    def __init__(
        self,
        sync: Callable[[], int],
        durable: Callable[[], int],
        pending: Callable[[], int],
        batch_delay_ms: float,
        batch_records_max: int,
    ) -> None:
        self._sync = sync
        self._durable = durable
        self._pending = pending
        self._delay_s = batch_delay_ms / 1000.0
        self._records_max = batch_records_max
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.fsync_rounds = 0  # fsyncs this committer ran; for tests and metrics

    async def wait_durable(self, target: int) -> None:
        """Return once every offset below ``target`` is durable; raise if the fsync failed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._waiters and self._loop is not None and not self._loop.is_closed():
                raise FailedPrecondition("the log's group commit is in use on another loop")
            self._loop, self._full, self._task = loop, asyncio.Event(), None
            self._waiters.clear()
        if self._durable() >= target:
            return
        assert self._full is not None
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((target, future))
        if self._pending() >= self._records_max:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(self._full))
        await future

    async def _run(self, full: asyncio.Event) -> None:
        while self._waiters:
            if not full.is_set():
                with contextlib.suppress(TimeoutError):  # the window ended
                    await asyncio.wait_for(full.wait(), timeout=self._delay_s)
            full.clear()
            try:
                durable = await asyncio.to_thread(self._sync)
            except Exception as error:  # every waiter learns its records are not durable
                waiters, self._waiters = self._waiters, []
                for _, future in waiters:
                    if not future.done():
                        future.set_exception(error)
                return
            self.fsync_rounds += 1
            self._resolve(durable)

    def _resolve(self, durable: int) -> None:
        still_waiting: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if future.done():
                continue
            if target <= durable:
                future.set_result(None)
            else:
                still_waiting.append((target, future))
        self._waiters = still_waiting
