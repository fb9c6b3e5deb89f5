"""Snapshots of a replicated queue's machine, and shipping one to a follower.

Theory of operation
-------------------
Every ``snapshot_every`` applied commands a node with a directory writes its machine
(``QueueMachine.to_snapshot``: the broker and the applied offset, which only ever covers
committed records) to ``snapshot.msgpack`` (temporary file, fsync, rename, directory fsync),
then cuts its copy of the log below the offset of its *previous* snapshot (whole segments
only). Reopened, a node restores the newest snapshot and applies only the committed records
after it. So a node's log always starts at or below its newest snapshot's offset, and a node
whose log start is above 0 always holds a snapshot covering it. A snapshot the disk refuses
is counted and tried again an interval later; the log still holds everything above the last
good one.

Install-snapshot (Raft's, over pubsub's fetch): a follower whose fetch asks for an offset
below its leader's log start (its directory was wiped, or it was away through more than an
interval) is answered ``behind`` with that log start ``L`` (``blocks.pubsub.replica``). Before
its log is dropped and started empty at ``L``, the follower (``LogBroker._before_log_restart``)
fetches the leader's newest snapshot, which covers some offset ``S >= L``, in chunks of at most
``CHUNK_BYTES`` (``queue_snapshot`` requests naming the snapshot's offset and a position; a
leader that wrote a newer snapshot meanwhile answers with it from the start, at most
``RESTARTS_MAX`` times), checks that it decodes to a machine at ``S``, writes it atomically,
and only then replaces its machine with it. Its log then restarts at ``L``: it fetches the
records ``[L, S)`` again (at most one interval; it skips applying them) so that its log keeps
a prefix the leader's epoch checks accept, and applies the committed records from ``S`` on.
It holds nothing the leader counts until it fetches, and rejoins the in-sync set only once
its fetches reach the high watermark, as any follower. A failure anywhere before the machine
is replaced leaves the node as it was (it is found behind again on its next fetch); a crash
after the snapshot file is written but before the log restarted leaves a snapshot above the
old log's end, which the node starts from (its fetch is behind again, and the rest repeats).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, FailedPrecondition, PeerError, Timeout, Unavailable
from blocks.core.files import write_atomically
from blocks.pubsub import ClusterBroker, Role, StoredRecord, check_entries
from blocks.queue.machine import QueueMachine

__all__ = ["CHUNK_BYTES", "LogBroker", "Snapshots"]

logger = logging.getLogger(__name__)

SNAPSHOT_FILE = "snapshot.msgpack"
CHUNK_BYTES = 1 << 20  # a snapshot travels in frames of at most this much data
RESTARTS_MAX = 5  # a transfer starts over at most this often (the leader wrote a newer one)
CHUNK_TIMEOUT_S = 10.0
OP = "queue_snapshot"
RECENT_MAX = 4_096  # records kept after their write for the queue's apply (per partition)


class Snapshots:
    """One node's snapshot file and counters; see the module docs."""

    def __init__(self, directory: Path | None, every: int) -> None:
        self.path = None if directory is None else directory / SNAPSHOT_FILE
        self.every = every
        self.since = 0  # records applied since the newest snapshot
        self.offset = 0  # the offset the newest snapshot covers (0: none)
        self.written = 0
        self.failures = 0
        self.installed = 0  # snapshots received from a leader

    def restore(self, log: ClusterBroker, key: tuple[str, int]) -> QueueMachine | None:
        """The machine of the newest snapshot, if any; checks the log continues it."""
        if self.path is None or not self.path.exists():
            return None
        machine = QueueMachine.from_snapshot(unpack(self.path.read_bytes()))
        self.offset = machine.applied
        try:
            first = log.topics.store(*key).first_offset
        except BlocksError:
            return machine
        if first > machine.applied:
            raise FailedPrecondition(
                f"the snapshot covers offsets below {machine.applied} but the log "
                f"starts at {first}: records between them are gone"
            )
        return machine

    def write(self, machine: QueueMachine, log: ClusterBroker, key: tuple[str, int]) -> int:
        """Write ``machine``, then cut the log below the previous snapshot; the offset."""
        if self.path is None:
            raise FailedPrecondition("a queue without a directory keeps no snapshots")
        covered = machine.applied
        write_atomically(self.path, pack(machine.to_snapshot()))
        previous, self.offset = self.offset, covered
        self.since = 0
        self.written += 1
        if previous > 0:
            store = log.topics.store(*key)
            store.truncate_before(previous)
            replica = log.replication.replicas.get(key)
            if replica is not None:
                replica.log_start = max(replica.log_start, store.first_offset)
        return covered

    def maybe_write(self, machine: QueueMachine, log: ClusterBroker, key: tuple[str, int]) -> None:
        if self.since < self.every or self.path is None:
            return
        try:
            self.write(machine, log, key)
        except (BlocksError, OSError) as error:
            self.failures += 1
            self.since = 0
            logger.warning("replicated queue snapshot failed (%s); the log keeps it all", error)

    # -- transfer -------------------------------------------------------------------------

    def serve_chunk(self, message: dict[str, Any]) -> dict[str, Any]:
        """A leader's answer to ``queue_snapshot``: ``CHUNK_BYTES`` of its newest snapshot
        from ``pos``, or from 0 when ``at`` names another one (it wrote a newer one)."""
        at, pos = message.get("at"), message.get("pos")
        if type(at) is not int or type(pos) is not int or pos < 0:
            raise PeerError("queue_snapshot carries integer at and pos")
        if self.path is None or self.offset == 0 or not self.path.exists():
            raise Unavailable("this node holds no snapshot")
        if at != self.offset:
            pos = 0
        with open(self.path, "rb") as file:  # the file and self.offset change together
            file.seek(0, 2)
            size = file.tell()
            file.seek(min(pos, size))
            data = file.read(CHUNK_BYTES)
        return {"offset": self.offset, "size": size, "pos": min(pos, size), "data": data}

    async def fetch(self, log: ClusterBroker, leader: str, start: int) -> QueueMachine:
        """The leader's newest snapshot (covering ``start`` at least), as a machine."""
        at, received, restarts = -1, 0, 0
        parts: list[bytes] = []
        while True:
            request = {"op": OP, "at": at, "pos": received}
            reply = await log.transport.request(leader, request, timeout_s=CHUNK_TIMEOUT_S)
            try:
                offset, size, pos, data = (reply[k] for k in ("offset", "size", "pos", "data"))
            except (KeyError, TypeError):
                raise PeerError("malformed queue_snapshot answer") from None
            if offset != at:
                restarts += 1
                if restarts > RESTARTS_MAX:
                    raise Unavailable("the leader's snapshot kept changing; retry")
                at, parts, received = offset, [], 0
            if pos != received or not isinstance(data, bytes) or received + len(data) > size:
                raise PeerError("a queue_snapshot chunk does not continue the transfer")
            parts.append(data)
            received += len(data)
            if received == size:
                break
            if not data:
                raise PeerError("an empty queue_snapshot chunk before the end")
        if at < start:
            raise Unavailable(f"the leader's snapshot ({at}) is below its log start ({start})")
        machine = QueueMachine.from_snapshot(unpack(b"".join(parts)))
        if machine.applied != at:
            raise PeerError("the snapshot does not cover the offset it was sent for")
        return machine

    def install(self, machine: QueueMachine) -> None:
        """Make a received snapshot this node's newest, durably (before the log restarts)."""
        if self.path is not None:
            write_atomically(self.path, pack(machine.to_snapshot()))
        self.offset = machine.applied
        self.since = 0
        self.installed += 1


class RecentWrites:
    """The records written to this node's partitions last, by offset (``RECENT_MAX`` each),
    so that the queue applies them without reading and decoding them back from the log. The
    topic table tells it of every write, truncation and restart (a ``WriteWatcher``), so an
    entry is exactly the record stored at its offset."""

    def __init__(self) -> None:
        self._by_partition: dict[tuple[str, int], dict[int, StoredRecord]] = {}

    def writing(self, name: str, partition: int, records: list[StoredRecord]) -> None:
        recent = self._by_partition.setdefault((name, partition), {})
        for record in records:
            recent[record.offset] = record
        while len(recent) > RECENT_MAX:
            del recent[next(iter(recent))]

    def cut(self, name: str, partition: int) -> None:
        self._by_partition.pop((name, partition), None)

    def take(self, key: tuple[str, int], offset: int) -> StoredRecord | None:
        recent = self._by_partition.get(key)
        return None if recent is None else recent.pop(offset, None)


class LogBroker(ClusterBroker):
    """The queue's log broker: tells the queue whenever a high watermark moves, serves its
    snapshot to followers, and installs a leader's before a restart of its log."""

    def __init__(
        self,
        *args: Any,
        on_committed: Callable[[], None],
        snapshots: Snapshots,
        install: Callable[[QueueMachine], None],
        **kwargs: Any,
    ) -> None:
        self._on_committed_hook = on_committed
        self._snapshots = snapshots
        self._install = install
        self._writes: set[asyncio.Task[None]] = set()  # leader writes still syncing here
        super().__init__(*args, **kwargs)
        self._recent = RecentWrites()
        self.topics.watcher = self._recent

    def recent(self, key: tuple[str, int], offset: int) -> StoredRecord | None:
        """Take the record written here at ``offset`` if it is still kept (else None: read
        it from the log). Each is handed out once."""
        return self._recent.take(key, offset)

    def _wake(self, key: tuple[str, int]) -> None:
        super()._wake(key)
        self._on_committed_hook()

    async def handle(self, source: str, message: Any) -> Any:
        if isinstance(message, dict) and message.get("op") == OP:
            return self._snapshots.serve_chunk(message)
        return await super().handle(source, message)

    async def _before_log_restart(self, key: tuple[str, int], leader: str, start: int) -> None:
        self._install(await self._snapshots.fetch(self, leader, start))

    async def produce_batch(
        self,
        topic: str,
        partition: int,
        entries: list[tuple[bytes | None, bytes]],
        *,
        producer_id: str | None = None,
        sequence: int = 0,
        hops: int = 0,
    ) -> int:
        """As ``ClusterBroker.produce_batch``; on the leader of a log that commits on a
        majority, answered once the records are committed, even while this node's own
        fsync of them still runs (two followers' durable copies are a majority)."""
        key = (topic, partition)
        replica = self.replication.replicas.get(key)
        if (
            replica is None
            or replica.role is not Role.LEADER
            or not self.replication.config.commit_on_majority
        ):
            return await super().produce_batch(
                topic, partition, entries, producer_id=producer_id, sequence=sequence, hops=hops
            )
        self._check_open()
        check_entries(entries)
        placed: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        write = asyncio.ensure_future(self._write(key, entries, producer_id, sequence, placed))
        self._writes.add(write)
        write.add_done_callback(_forget_write(self._writes))
        base, epoch = await placed
        # One future, resolved by the commit, failed by the write or the timer: the caller
        # wakes once, with no task between it and the high watermark.
        committed = self.replication.commit_waiter(key, base + len(entries), epoch)
        write.add_done_callback(_fail_with(committed))
        timeout_s = self.replication.config.ack_timeout_ms / 1000.0
        timer = asyncio.get_running_loop().call_later(timeout_s, _time_out, committed)
        try:
            await committed
        finally:
            timer.cancel()
        return base

    async def close(self) -> None:
        await asyncio.gather(*self._writes, return_exceptions=True)  # their fsyncs end first
        await super().close()

    async def _write(
        self,
        key: tuple[str, int],
        entries: list[tuple[bytes | None, bytes]],
        producer_id: str | None,
        sequence: int,
        placed: asyncio.Future[tuple[int, int]],
    ) -> None:
        """Prepare and store the records in one step of this task (so concurrent writes take
        offsets in the order they store them), tell ``placed`` where they went, then wait
        until they are durable here."""
        replica = self.replication.replicas[key]
        try:
            if replica.role is not Role.LEADER:
                raise Unavailable("the partition's leader changed; retry")
            epoch = replica.epoch
            records, base = self.topics.prepare_append(
                key[0], key[1], entries, self._clock.now_ms(), producer_id, sequence, epoch
            )
        except BaseException as error:
            placed.set_exception(error)
            return
        placed.set_result((base, epoch))
        if records:
            await self.replication.append(key, records)
            await self.replication.settle(key)


def _fail_with(committed: asyncio.Future[None]) -> Callable[[asyncio.Task[None]], None]:
    """A done callback: a write that failed fails the commit still awaited (a write that
    succeeded leaves it to the high watermark)."""

    def fail(task: asyncio.Task[None]) -> None:
        if committed.done() or task.cancelled() or task.exception() is None:
            return
        committed.set_exception(task.exception())  # type: ignore[arg-type]

    return fail


def _time_out(committed: asyncio.Future[None]) -> None:
    if not committed.done():
        committed.set_exception(Timeout("the in-sync replicas did not confirm in time"))


def _forget_write(writes: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    """A done callback: drop the task from ``writes`` and take its error, if any (the caller
    that wanted it has it already, or was answered by the commit first)."""

    def forget(task: asyncio.Task[None]) -> None:
        writes.discard(task)
        if not task.cancelled():
            task.exception()

    return forget
