"""Publishing to JetStream for ``NatsPubSub``: message ids, retries, pipelined batches.

Theory of operation
-------------------
Every record gets a ``Nats-Msg-Id`` of ``<producer id>:<partition>:<sequence>`` (the producer
id is random per adapter), a timestamp header from the injected clock and, when it has one,
its key (hex) in a header. ``publish`` sends one record and waits for its ack; a publish that
times out is sent again with the same id (at most ``PUBLISH_ATTEMPTS_MAX`` times), so
JetStream's duplicate window answers the first offset instead of storing it twice.

``publish_batch`` pipelines a batch: one ``stream_info`` for the partition's last sequence,
then every publish sent at once, then every ack awaited. Each publish carries a condition that
keeps the batch whole and in order: the first, ``Nats-Expected-Last-Sequence`` (the
partition's last sequence); each later one, ``Nats-Expected-Last-Msg-Id`` (the previous
record's id). A record JetStream did not store, or another producer's record in between, makes
every later one fail, so what is stored is always a contiguous prefix of the batch. This
publisher's own batches to one partition take turns (a lock per partition), so they never
break each other's conditions. What is left is published one record at a time with the same
message ids, so a record stored whose ack was lost is not stored twice.

A batch's publishes carry replies to this publisher's own inbox (``<inbox>.<n>``, one
subscription per publisher) and each reply settles the future of exactly the publish that
named it: an ack with its sequence, or a refusal (an error reply or no responders) as
``None``. nats-py's ``publish_async`` is not used: 2.16 raises inside its reply handler on an
error reply instead of failing the future, so a batch another producer broke waited the whole
``ACK_WAIT_S`` for acks that had already come back as refusals.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from blocks.core.clock import Clock
from blocks.core.errors import InvalidArgument, Timeout, Unavailable
from blocks.core.natscall import nats_call

__all__ = [
    "KEY_HEADER",
    "PUBLISH_ATTEMPTS_MAX",
    "TIMESTAMP_HEADER",
    "JetStreamPublisher",
    "check_record",
]

PUBLISH_ATTEMPTS_MAX = 3
ACK_WAIT_S = 5.0
TIMESTAMP_HEADER = "Blocks-Timestamp-Ms"
KEY_HEADER = "Blocks-Key"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
MSG_ID = "Nats-Msg-Id"

T = TypeVar("T")


class JetStreamPublisher:
    """One adapter's publishing; ``stream``/``subject`` name a partition's stream and subject."""

    def __init__(
        self,
        client: Client,
        js: JetStreamContext,
        clock: Clock,
        *,
        stream: Callable[[str, int], str],
        subject: Callable[[str, int], str],
    ) -> None:
        self._nc = client
        self._js = js
        self._clock = clock
        self._stream_of = stream
        self._subject_of = subject
        self._producer_id = uuid.uuid4().hex[:16]
        self._sequences: dict[tuple[str, int], itertools.count[int]] = {}
        # at most one lock per partition of a topic this publisher wrote a batch to
        self._batch_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._ack_prefix: str | None = None  # "<inbox>." once subscribed to "<inbox>.*"
        self._ack_subscribe_lock = asyncio.Lock()
        self._ack_numbers = itertools.count()
        # reply subject -> its publish's ack; only the publishes of batches now in flight
        self._acks: dict[str, asyncio.Future[int | None]] = {}

    async def _nats(self, awaitable: Awaitable[T], what: str) -> T:
        return await nats_call(self._nc, awaitable, what)

    async def publish_batch(
        self, topic: str, partition: int, entries: list[tuple[bytes | None, bytes]]
    ) -> int:
        """Publish ``entries`` (checked by the caller) in order; the first offset."""
        lock = self._batch_locks.setdefault((topic, partition), asyncio.Lock())
        async with lock:
            return await self._publish_batch(topic, partition, entries)

    async def _publish_batch(
        self, topic: str, partition: int, entries: list[tuple[bytes | None, bytes]]
    ) -> int:
        info = await self._nats(self._js.stream_info(self._stream_of(topic, partition)), "produce")
        last = int(info.state.last_seq)
        headers = [self.headers(topic, partition, key) for key, _ in entries]
        subject = self._subject_of(topic, partition)
        prefix = await self._ack_inbox()
        replies: list[str] = []
        try:
            for index, (_, value) in enumerate(entries):
                if index == 0:
                    condition = {EXPECTED_LAST_SEQUENCE: str(last)}
                else:
                    condition = {EXPECTED_LAST_MSG_ID: headers[index - 1][MSG_ID]}
                reply = f"{prefix}{next(self._ack_numbers)}"
                self._acks[reply] = asyncio.get_running_loop().create_future()
                replies.append(reply)
                publish = self._nc.publish(
                    subject, value, reply=reply, headers={**headers[index], **condition}
                )
                await self._nats(publish, "produce")
            stored = await self._count_stored(replies, last)
        finally:
            for reply in replies:
                self._acks.pop(reply).cancel()  # no-op on a settled one
        first = last if stored else None
        for index in range(stored, len(entries)):
            key, value = entries[index]
            offset = await self.publish(topic, partition, key, value, headers[index])
            first = offset if first is None else first
        assert first is not None
        return first

    async def _ack_inbox(self) -> str:
        """This publisher's ack inbox prefix, subscribing to it on first use."""
        async with self._ack_subscribe_lock:
            if self._ack_prefix is None:
                inbox = self._nc.new_inbox()
                await self._nats(self._nc.subscribe(f"{inbox}.*", cb=self._handle_ack), "produce")
                self._ack_prefix = f"{inbox}."
            return self._ack_prefix

    async def _handle_ack(self, msg: Msg) -> None:
        """Settle the future of the publish whose reply subject ``msg`` came to; a reply
        nobody waits for any more (its batch gave up on it) is dropped."""
        future = self._acks.get(msg.subject)
        if future is not None and not future.done():
            future.set_result(acked_sequence(msg.data))

    async def _count_stored(self, replies: list[str], last: int) -> int:
        """How many of the batch's records, from its first, JetStream acked in order right
        after sequence ``last``; waits at most ``ACK_WAIT_S`` (an ack not in by then counts
        as lost)."""
        futures = [self._acks[reply] for reply in replies]
        # one wait for every ack (not a wait_for task per record: 100 tasks a batch cost more
        # than the publishes); refusals come back at once, so only lost acks wait it out
        if futures:
            await asyncio.wait(futures, timeout=ACK_WAIT_S)
        stored = 0
        for future in futures:
            if not future.done() or future.result() != last + stored + 1:
                break
            stored += 1
        return stored

    def headers(self, topic: str, partition: int, key: bytes | None) -> dict[str, str]:
        counter = self._sequences.setdefault((topic, partition), itertools.count())
        headers = {
            MSG_ID: f"{self._producer_id}:{partition}:{next(counter)}",
            TIMESTAMP_HEADER: str(self._clock.now_ms()),
        }
        if key is not None:
            headers[KEY_HEADER] = key.hex()
        return headers

    async def publish(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        headers: dict[str, str] | None = None,
    ) -> int:
        check_record(key, value)
        if headers is None:
            headers = self.headers(topic, partition, key)
        subject = self._subject_of(topic, partition)
        for attempt in range(PUBLISH_ATTEMPTS_MAX):
            try:
                ack = await self._nats(self._js.publish(subject, value, headers=headers), "produce")
                return int(ack.seq) - 1
            except Timeout:
                if attempt == PUBLISH_ATTEMPTS_MAX - 1:
                    raise
            except Unavailable:
                # No responders while connected: the partition's stream may be gone.
                await self._nats(self._js.stream_info(self._stream_of(topic, partition)), "produce")
                raise
        raise AssertionError("unreachable")


def acked_sequence(reply: bytes) -> int | None:
    """The stream sequence a JetStream publish ack names; ``None`` for a refusal (an error
    reply, a no-responders status with an empty body, anything that is not an ack)."""
    try:
        answer = json.loads(reply)
    except ValueError:
        return None
    if not isinstance(answer, dict) or "error" in answer:
        return None
    sequence = answer.get("seq")
    return sequence if isinstance(sequence, int) and sequence > 0 else None


def check_record(key: object, value: object) -> None:
    """A record's value is bytes and its key bytes or None (``InvalidArgument`` if not)."""
    if not isinstance(value, bytes):
        raise InvalidArgument("a value is bytes")
    if key is not None and not isinstance(key, bytes):
        raise InvalidArgument("a key is bytes or None")
