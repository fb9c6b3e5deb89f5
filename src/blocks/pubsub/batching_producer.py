"""``Producer``: coalesces concurrent produce calls into pipelined, idempotent batches.

Theory of operation
-------------------
A client that sends every ``produce`` call as its own request and waits for it pays one round
trip (and, durable, one fsync) per record. Kafka's and NATS's clients do better, and so does
this one:

* **Coalescing.** Calls for one partition queue up in its ``_Lane``; the lane's sender takes
  everything queued (up to ``batch_records_max`` records and ``batch_bytes_max`` bytes) as one
  batch. With ``linger_ms`` it first waits that long for a batch to fill; with 0 (the
  default) it sends at once, and batches form by themselves while earlier ones are in flight.
* **Pipelining.** Up to ``in_flight_max`` batches per partition are outstanding at once
  (Kafka's ``max.in.flight.requests.per.connection`` with idempotence, 5). Each batch gets its
  sequence numbers when it is sent, in order, so the broker sees contiguous sequences. A
  lane with a batch in flight sends another only once a *full* batch is queued: records
  arriving during a round trip wait for it and leave together. Measured with 32 callers on
  4 partitions, sending every partial batch at once (Kafka with ``linger.ms=0``) made
  batches of 1-2 records and cost up to half the throughput, because on a busy machine the
  per-request work, not the wire, is the limit; a producer that outruns one round trip fills
  batches and then uses the extra slots.
* **Ordered recovery.** If a batch fails, the broker refuses the later ones with an
  out-of-order ``Conflict`` (or they fail the same way). The lane stops sending, waits for
  every outstanding batch to finish, then resends the failed ones *one at a time, in sequence
  order*, under their original sequence numbers, retrying ``Unavailable``, ``Timeout`` and
  ``Overloaded`` with exponential backoff (``retries_max`` attempts). The broker remembers the
  producer's recent batches (``blocks.pubsub.producer_runs``), so a batch that was in fact
  stored is answered with its original offsets instead of being written twice. A batch that
  keeps failing fails its callers; the lane then starts a fresh producer session (new id,
  sequence 0) so that nothing after it is mistaken for it. If it failed with a retryable error
  (it may have been stored), the failed batches after it fail with the same error; otherwise
  they are renumbered into the new session and sent.
* **Backpressure.** At most ``buffer_records_max`` records wait or fly in the whole producer;
  a ``produce`` beyond that waits for room (Kafka's ``buffer.memory``).

``send`` does the I/O (the gRPC or TCP request); everything else is bookkeeping in one event
loop. A caller whose ``produce`` is cancelled stops waiting; its record is still sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from blocks.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    Overloaded,
    Timeout,
    Unavailable,
)
from blocks.pubsub.producer_runs import RUNS_MAX
from blocks.pubsub.topics import BATCH_RECORDS_MAX

__all__ = ["Entries", "Producer", "ProducerConfig", "SendBatch"]

Entries = list[tuple[bytes | None, bytes]]
SendBatch = Callable[[str, int, Entries, str, int], Awaitable[int]]
"""``send(topic, partition, entries, producer_id, sequence)`` returns the batch's base offset."""

RETRYABLE = (Unavailable, Timeout, Overloaded)


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    linger_ms: float = 0.0
    batch_records_max: int = 2000
    batch_bytes_max: int = 1 << 20
    in_flight_max: int = 5  # batches per partition; below the broker's remembered runs
    buffer_records_max: int = 100_000
    retries_max: int = 8
    backoff_max_s: float = 1.0
    sticky_bytes: int = 16 << 10  # keyless records per partition in a row; 0: one by one

    def __post_init__(self) -> None:
        if not 0 <= self.linger_ms <= 10_000:
            raise InvalidArgument("linger_ms must be within 0..10000")
        if not 1 <= self.batch_records_max <= BATCH_RECORDS_MAX or self.batch_bytes_max < 1:
            raise InvalidArgument(
                f"batch_records_max must be within 1..{BATCH_RECORDS_MAX}, batch_bytes_max >= 1"
            )
        if not 1 <= self.in_flight_max < RUNS_MAX:
            raise InvalidArgument(f"in_flight_max must be within 1..{RUNS_MAX - 1}")
        if self.buffer_records_max < BATCH_RECORDS_MAX:
            raise InvalidArgument(f"buffer_records_max must be at least {BATCH_RECORDS_MAX}")
        if self.sticky_bytes < 0:
            raise InvalidArgument("sticky_bytes must be >= 0")
        if self.retries_max < 1 or self.backoff_max_s < 0:
            raise InvalidArgument("retries_max must be >= 1 and backoff_max_s >= 0")


@dataclass(slots=True)
class _Pending:
    """One caller's records and the future that gets their first offset."""

    entries: Entries
    size: int
    future: asyncio.Future[int]


@dataclass(slots=True)
class _Batch:
    items: list[_Pending]
    entries: Entries
    producer_id: str = ""
    sequence: int = 0
    error: BaseException | None = None
    finished: bool = False  # its current attempt has an outcome


@dataclass(slots=True)
class _Lane:
    """The queue, the outstanding batches and the session of one partition."""

    topic: str
    partition: int
    producer_id: str
    queue: deque[_Pending] = field(default_factory=deque)
    in_flight: list[_Batch] = field(default_factory=list)
    next_sequence: int = 0
    queued_records: int = 0
    queued_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Producer:
    """Pipelined idempotent batching over ``send``; see the module docs."""

    def __init__(self, send: SendBatch, config: ProducerConfig | None = None) -> None:
        self._send = send
        self.config = config if config is not None else ProducerConfig()
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._buffered = 0
        self._room = asyncio.Event()
        self._closed = False
        self._attempts: set[asyncio.Task[None]] = set()
        self.batches_sent = 0  # batches handed to ``send``, retries included (for tests)

    async def produce(self, topic: str, partition: int, entries: Entries) -> int:
        """Queue records for one partition; return their first offset once acknowledged."""
        if self._closed:
            raise FailedPrecondition("producer is closed")
        if not entries or len(entries) > BATCH_RECORDS_MAX:
            raise InvalidArgument(f"a produce holds 1..{BATCH_RECORDS_MAX} records")
        while self._buffered + len(entries) > self.config.buffer_records_max:
            self._room.clear()
            await self._room.wait()
            if self._closed:
                raise FailedPrecondition("producer is closed")
        lane = self._lane(topic, partition)
        size = sum(len(value) + len(key or b"") for key, value in entries)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        lane.queue.append(_Pending(entries, size, future))
        lane.queued_records += len(entries)
        lane.queued_bytes += size
        self._buffered += len(entries)
        lane.wake.set()
        return await future

    def _lane(self, topic: str, partition: int) -> _Lane:
        lane = self._lanes.get((topic, partition))
        if lane is None:
            lane = _Lane(topic, partition, uuid.uuid4().hex)
            self._lanes[(topic, partition)] = lane
        if lane.task is None or lane.task.done():
            lane.task = asyncio.get_running_loop().create_task(self._run(lane))
        return lane

    async def _run(self, lane: _Lane) -> None:
        while True:
            await lane.wake.wait()
            lane.wake.clear()
            if any(b.error is not None for b in lane.in_flight):
                if all(b.finished for b in lane.in_flight):
                    await self._recover(lane)
                    lane.wake.set()
                continue  # let the outstanding attempts finish first
            if lane.queue and self.config.linger_ms > 0 and not self._full(lane):
                await asyncio.sleep(self.config.linger_ms / 1000.0)
            while (
                lane.queue
                and len(lane.in_flight) < self.config.in_flight_max
                and (not lane.in_flight or self._full(lane))
            ):
                batch = self._take(lane)
                lane.in_flight.append(batch)
                attempt = asyncio.get_running_loop().create_task(self._attempt(lane, batch))
                self._attempts.add(attempt)
                attempt.add_done_callback(self._attempts.discard)

    def _full(self, lane: _Lane) -> bool:
        return (
            lane.queued_records >= self.config.batch_records_max
            or lane.queued_bytes >= self.config.batch_bytes_max
        )

    def _take(self, lane: _Lane) -> _Batch:
        items: list[_Pending] = []
        entries: Entries = []
        size = 0
        while lane.queue:
            item = lane.queue[0]
            if items and (
                len(entries) + len(item.entries) > self.config.batch_records_max
                or size + item.size > self.config.batch_bytes_max
            ):
                break
            lane.queue.popleft()
            lane.queued_records -= len(item.entries)
            lane.queued_bytes -= item.size
            items.append(item)
            entries.extend(item.entries)
            size += item.size
        batch = _Batch(items, entries, lane.producer_id, lane.next_sequence)
        lane.next_sequence += len(entries)
        return batch

    async def _attempt(self, lane: _Lane, batch: _Batch) -> None:
        try:
            base = await self._call(lane, batch)
        except Exception as error:
            batch.error = error
        else:
            lane.in_flight.remove(batch)
            self._resolve(batch, base)
        finally:
            batch.finished = True
            lane.wake.set()

    async def _call(self, lane: _Lane, batch: _Batch) -> int:
        self.batches_sent += 1
        return await self._send(
            lane.topic, lane.partition, batch.entries, batch.producer_id, batch.sequence
        )

    async def _recover(self, lane: _Lane) -> None:
        """Resend the failed batches one at a time, in sequence order (see module docs)."""
        failed = [b for b in lane.in_flight if b.error is not None]
        lane.in_flight.clear()
        for index, batch in enumerate(failed):
            try:
                base = await self._retry(lane, batch)
            except Exception as error:
                self._fail(batch, error)
                lane.producer_id, lane.next_sequence = uuid.uuid4().hex, 0
                later = failed[index + 1 :]
                if isinstance(error, RETRYABLE):
                    for other in later:  # each may have been stored: report, do not resend
                        self._fail(other, error)
                    return
                for other in later:  # refused for the gap, so never stored: renumber
                    other.producer_id, other.sequence = lane.producer_id, lane.next_sequence
                    lane.next_sequence += len(other.entries)
            else:
                self._resolve(batch, base)

    async def _retry(self, lane: _Lane, batch: _Batch) -> int:
        for attempt in range(self.config.retries_max):
            try:
                return await self._call(lane, batch)
            except RETRYABLE as error:
                if attempt == self.config.retries_max - 1:
                    raise
                delay_s = min(0.05 * 2**attempt, self.config.backoff_max_s)
                if isinstance(error, Overloaded) and error.retry_after_ms:
                    delay_s = max(delay_s, error.retry_after_ms / 1000.0)
                await asyncio.sleep(delay_s)
        raise AssertionError("unreachable")

    def _resolve(self, batch: _Batch, base: int) -> None:
        offset = base
        for item in batch.items:
            if not item.future.done():
                item.future.set_result(offset)
            offset += len(item.entries)
        self._release(len(batch.entries))

    def _fail(self, batch: _Batch, error: BaseException) -> None:
        for item in batch.items:
            if not item.future.done():
                item.future.set_exception(error)
        self._release(len(batch.entries))

    def _release(self, records: int) -> None:
        self._buffered -= records
        self._room.set()

    async def flush(self) -> None:
        """Wait until every record queued so far has its outcome."""
        futures = [
            item.future
            for lane in self._lanes.values()
            for item in [*lane.queue, *(i for b in lane.in_flight for i in b.items)]
        ]
        if futures:
            await asyncio.wait(futures)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush for up to ``timeout_s``, then stop; what is left fails ``FailedPrecondition``."""
        if self._closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout_s)
        self._closed = True
        self._room.set()
        error = FailedPrecondition("producer closed before the record was acknowledged")
        for attempt in list(self._attempts):
            attempt.cancel()
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
            for item in [*lane.queue, *(i for b in lane.in_flight for i in b.items)]:
                if not item.future.done():
                    item.future.set_exception(error)
            lane.queue.clear()
