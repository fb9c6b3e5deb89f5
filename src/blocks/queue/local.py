"""``LocalQueue``: the in-process queue broker, durable on ``blocks.core.log`` when given a
directory, with long polling.

Theory of operation
-------------------
A thin driver around ``QueueBroker``. Each call becomes a command stamped with the injected
clock's ``now_ms``; the broker executes it; if it succeeded and changed something, the
command's msgpack bytes are appended to a ``SegmentLog`` and the call returns only once the
record is durable (group commit under ``fsync="batch"``: concurrent callers share an fsync).
The append happens in the same event-loop step as the execution, so the log order is the
execution order, and reopening the directory replays the log into an identical broker.
Receives that hand out messages are logged too, so receive counts and invisibility deadlines
survive a restart; a receive that finds nothing changes nothing and is not logged. Group
commit has no window: the first waiter starts an fsync at once, and every record written
while it runs shares the next one.

``run_many`` executes a batch of calls (sends, acks, nacks, extensions, receives without a
wait: what a client coalesced from many callers) in one event-loop step, appends the records
of those that changed something in one write, and waits for one durable point: a batch of a
hundred acks costs one write and at most one fsync. Each call succeeds or fails on its own,
exactly as if it had been made alone in that order.

Every ``snapshot_every`` records the broker is written to ``snapshot.msgpack`` (temporary file,
fsync, rename, directory fsync) together with the log offset it covers, and the log segments
below that offset are deleted. A snapshot the disk refuses is counted (``snapshot_failures``)
and tried again ``snapshot_every`` records later; the log alone still rebuilds the broker.

A refused append (a full disk, an I/O error, a failed fsync) leaves the broker ahead of its
log: it ran a command the log does not hold. The queue then rebuilds the broker from the
snapshot and the log, as a restart would (``rebuilds`` counts them), reopening the log first
when it refuses all work (after a failed fsync), and keeps serving: only the calls whose
records were refused fail (``StorageFull`` or ``StorageError``; a message a failed receive
handed out is visible again), every other call goes on, and writes work again as soon as the
disk takes them. Records written before the refusal are in the rebuilt broker whether or not
their fsync succeeded, as after a restart (a call whose fsync failed was told so, and its
effect may or may not remain, as ``StorageError`` says). The rebuild happens in the event-loop
step that saw the refusal, so no other call observes the broker ahead of its log; each costs a
replay of the records since the last snapshot. Only when the rebuild itself fails does the
queue refuse all work (``FailedPrecondition``) until it is reopened.

Long polling: a receive that finds nothing waits on the queue's waiters list until a command
touches the queue (a send, a nack, an ack that unlocks a FIFO group, a dead letter arriving)
or the broker's next timer (a delay or visibility deadline) falls due, then tries again,
until ``wait_ms`` has passed. Waiters and in-flight calls are bounded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from blocks.core.clock import Clock, SystemClock
from blocks.core.codec import pack, unpack
from blocks.core.errors import (
    BlocksError,
    Corruption,
    FailedPrecondition,
    Overloaded,
)
from blocks.core.files import write_atomically
from blocks.core.log import FsyncPolicy, SegmentLog
from blocks.core.long_polls import WAITERS_MAX, LongPolls
from blocks.queue.broker import QueueBroker
from blocks.queue.commands import (
    CALLS_PER_BATCH_MAX,
    WAIT_MS_MAX,
    CommandQueue,
    check_batch,
    wire_result,
)
from blocks.queue.machine import command_for_call

__all__ = ["CALLS_PER_BATCH_MAX", "WAIT_MS_MAX", "LocalQueue"]

logger = logging.getLogger(__name__)

CALLS_IN_FLIGHT_MAX = 4096  # below the log's pending_records_max, so appends never overflow
SNAPSHOT_FILE = "snapshot.msgpack"


class LocalQueue(CommandQueue):
    """An in-process ``Queue``; durable when ``directory`` is given."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        clock: Clock | None = None,
        fsync: FsyncPolicy = "batch",
        snapshot_every: int = 50_000,
        segment_bytes_max: int = 16 << 20,
    ) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._directory = None if directory is None else Path(directory)
        self._snapshot_every = snapshot_every
        self._long_polls: LongPolls[str] = LongPolls(WAITERS_MAX)
        self._in_flight = 0
        self._closed = False
        self._failure: BaseException | None = None
        self._log: SegmentLog | None = None
        self._broker = QueueBroker()
        self._fsync = fsync
        self._segment_bytes_max = segment_bytes_max
        if self._directory is not None:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._log = self._open_log()
            try:
                self._broker = self._recover(self._log)
            except BaseException:
                self._log.close()
                raise
        self._records_since_snapshot = 0
        self.rebuilds = 0  # times a refused append made the queue rebuild its broker
        self.snapshot_failures = 0

    def _open_log(self) -> SegmentLog:
        assert self._directory is not None
        return SegmentLog(
            self._directory / "log",
            fsync=self._fsync,
            segment_bytes_max=self._segment_bytes_max,
            clock=self._clock,
            batch_delay_ms=0.0,  # group commit without a window: see the module docs
        )

    # -- recovery and snapshots --------------------------------------------------------------

    def _recover(self, log: SegmentLog) -> QueueBroker:
        assert self._directory is not None
        start, broker = log.first_offset, QueueBroker()
        path = self._directory / SNAPSHOT_FILE
        if path.exists():
            data = unpack(path.read_bytes())
            start, broker = int(data["offset"]), QueueBroker.restore(data["broker"])
            if start < log.first_offset:
                raise Corruption(f"snapshot ends at {start} but the log starts later")
        if start < log.next_offset:
            for _, record in log.iter_from(start):
                broker.execute(unpack(record))
        return broker

    def snapshot(self) -> int:
        """Write the broker to disk and drop the log before it; return the covered offset."""
        log = self._require_log()
        assert self._directory is not None
        offset = log.next_offset
        log.sync()
        data = pack({"offset": offset, "broker": self._broker.snapshot()})
        write_atomically(self._directory / SNAPSHOT_FILE, data)  # temporary, fsync, rename
        log.truncate_before(offset)
        self._records_since_snapshot = 0
        return offset

    def _maybe_snapshot(self) -> None:
        """Snapshot once ``snapshot_every`` records were logged since the last one; a disk
        that refuses it costs only the snapshot (see the module docs)."""
        if self._records_since_snapshot < self._snapshot_every:
            return
        try:
            self.snapshot()
        except (BlocksError, OSError) as error:
            self.snapshot_failures += 1
            self._records_since_snapshot = 0
            logger.warning("queue snapshot failed (%s); the log still holds everything", error)

    def _require_log(self) -> SegmentLog:
        if self._log is None:
            raise FailedPrecondition("this queue is not durable (no directory)")
        return self._log

    # -- the driver ------------------------------------------------------------------------

    @property
    def broker(self) -> QueueBroker:
        """The pure core (read it; change it only through this object)."""
        return self._broker

    async def _run(self, command: list[Any], *, touched: tuple[str, ...] = ()) -> Any:
        self._check_usable()
        if self._in_flight >= CALLS_IN_FLIGHT_MAX:
            raise Overloaded("too many calls in flight", retry_after_ms=5)
        result = self._broker.execute(command)
        changed = not (command[0] == "receive" and not result)
        self._in_flight += 1
        try:
            if changed and self._log is not None:
                await self._append(pack(command))
                self._records_since_snapshot += 1
                self._maybe_snapshot()
        finally:
            self._in_flight -= 1
        if changed:
            for name in touched:
                self._wake(name)
        return result

    async def run_many(self, calls: Any) -> list[tuple[bool, Any]]:
        """Run wire calls in order (see ``command_for``); return ``(True, result)`` or
        ``(False, error)`` per call, once every change is durable."""
        self._check_usable()
        check_batch(calls)
        if self._in_flight + len(calls) > CALLS_IN_FLIGHT_MAX:
            raise Overloaded("too many calls in flight", retry_after_ms=5)
        now_ms = self._now()
        outcomes: list[tuple[bool, Any]] = []
        records: list[bytes] = []
        touched: set[str] = set()
        for call in calls:
            try:
                command, names = self.command_for(call, now_ms)
                result = self._broker.execute(command)
            except BlocksError as error:
                outcomes.append((False, error))
                continue
            if result or command[0] != "receive":
                records.append(pack(command))
                touched.update(names)
            outcomes.append((True, wire_result(command[0], result)))
        if records and self._log is not None:
            self._in_flight += len(calls)
            try:
                await self._append_many(records)
            finally:
                self._in_flight -= len(calls)
            self._records_since_snapshot += len(records)
            self._maybe_snapshot()
        for name in touched:
            self._wake(name)
        return outcomes

    def command_for(self, call: Any, now_ms: int) -> tuple[list[Any], tuple[str, ...]]:
        """The broker command for a wire call, and the queues it may wake:
        ``["send", name, body, delay_ms, group, dedup_id, priority]``, ``["receive", name,
        max_messages, visibility_ms or None]``, ``["ack", name, receipt]``, ``["nack", name,
        receipt, delay_ms]``, ``["extend", name, receipt, visibility_ms]``."""
        command = command_for_call(call, now_ms)
        verb, name = call[0], call[1]
        touched: tuple[str, ...] = ()
        if verb == "send" or verb == "ack":
            touched = (name,)
        elif verb == "nack":
            touched = self._touched(name)
        elif verb == "receive":  # NotFound before any time passes, as ``receive`` does
            command[4] = self._receive_visibility(name, command[4])
        return command, touched

    def _check_usable(self) -> None:
        if self._closed:
            raise FailedPrecondition("queue is closed")
        if self._failure is not None:
            raise FailedPrecondition(f"queue storage failed ({self._failure}); reopen it")

    async def _append_many(self, records: list[bytes]) -> None:
        """Log executed commands; if that fails, rebuild the broker (see the module docs)."""
        log = self._log
        assert log is not None
        try:
            await log.append_many_async(records)
        except (BlocksError, OSError) as error:
            self._rebuild_after(log, error)
            raise

    async def _append(self, record: bytes) -> None:
        await self._append_many([record])

    def _rebuild_after(self, log: SegmentLog, error: BaseException) -> None:
        """``log`` refused an append: make the broker what the log holds again, reopening the
        log first if it refuses all work; if even that fails, refuse all work from now on."""
        if log is not self._log or self._failure is not None:
            return  # a caller that failed with the same fsync already rebuilt
        self.rebuilds += 1
        logger.warning("queue storage refused a write (%s); rebuilding from the log", error)
        try:
            if not _usable(log):
                log.close()
                self._log = self._open_log()
            self._broker = self._recover(self._log)
        except (BlocksError, OSError) as rebuild_error:
            self._failure = rebuild_error
            logger.error("queue rebuild failed (%s); reopen the queue", rebuild_error)
        self._long_polls.wake_all()  # a failed receive's messages may be visible again

    def _touched(self, name: str) -> tuple[str, ...]:
        state = self._broker.queue(name)
        dead_letter = state.config.dead_letter
        return (name,) if dead_letter is None else (name, dead_letter)

    def _wake(self, name: str) -> None:
        self._long_polls.wake(name)

    # -- what the Queue interface (``CommandQueue``) runs on ------------------------------

    def _applied_broker(self) -> QueueBroker:
        return self._broker

    def _receive_visibility(self, name: str, visibility_ms: int | None) -> int:
        state = self._broker.queue(name)  # NotFound before any time passes
        return state.config.visibility_ms if visibility_ms is None else visibility_ms

    def _nack_touches(self, name: str) -> tuple[str, ...]:
        return self._touched(name) if isinstance(name, str) else ()

    async def _wait(self, name: str, remaining_s: float) -> None:
        """Sleep until the queue is touched or ``remaining_s`` passed."""
        await self._long_polls.wait(name, remaining_s)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._long_polls.wake_all()
        if self._log is not None:
            self._log.close()


def _usable(log: SegmentLog) -> bool:
    """Whether ``log`` still takes work: a failed write is rolled back and leaves it usable;
    a failed fsync does not (``sync`` then raises, as every other call would)."""
    try:
        log.sync()
    except (BlocksError, OSError):
        return False
    return True
