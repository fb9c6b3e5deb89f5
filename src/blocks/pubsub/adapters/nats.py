"""``NatsPubSub``: the ``blocks.pubsub`` API on NATS JetStream.

Theory of operation
-------------------
Offsets are per partition and dense, JetStream sequences are per stream: so each partition
is its own stream, ``<namespace><topic>-<p>`` with the one subject ``<namespace><topic>.<p>``,
and **offset = stream sequence - 1**. A topic is the set of its partition streams; the
partition count is written in stream 0's description. Retention (``max_age``/``max_bytes``)
removes the oldest messages and leaves later sequences unchanged, as the API asks.

``produce`` publishes with a publish acknowledgement (file storage: the ack means stored; publishing
lives in ``nats_publish.JetStreamPublisher``) and
a ``Nats-Msg-Id`` of ``<producer id>:<partition>:<sequence>``; a timed-out publish is retried
with the same id (at most ``PUBLISH_ATTEMPTS_MAX``), so JetStream's duplicate window drops the
copy and answers with the original sequence: the idempotent producer. ``fetch`` reads by
sequence (one direct get per record). The record's timestamp is the producer's injected clock,
carried in a header, so it is the same clock as the other implementations.

Groups: membership, generations and fencing run in this client (the pure
``GroupCoordinator``, on the injected clock), so members of one group must share one
``NatsPubSub``; committed offsets are durable in a JetStream key-value bucket (a durable
consumer's ack floor cannot be set to an arbitrary offset, which ``commit`` allows), written
with compare-and-set so they never move backwards. See docs/adapters.md for the differences.

Errors: a call while the connection is down raises ``Unavailable``; a JetStream request that
times out raises ``Timeout``; nats exceptions never escape.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.js.api import StorageType, StreamConfig
from nats.js.kv import KeyValue

from blocks.core.clock import Clock
from blocks.core.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from blocks.core.hashing import key_hash
from blocks.core.natscall import NatsAdapter, check_nats_name, connect_nats, nats_call
from blocks.pubsub.adapters.nats_publish import (
    KEY_HEADER,
    TIMESTAMP_HEADER,
    JetStreamPublisher,
    check_record,
)
from blocks.pubsub.api import Assignment, Record
from blocks.pubsub.consumer import Consumer
from blocks.pubsub.groups import GroupCoordinator
from blocks.pubsub.topics import check_fetch

__all__ = ["PROPERTIES", "NatsPubSub", "connect_nats", "nats_call"]  # the last two: core.natscall

PROPERTIES = frozenset(
    {
        "dense offsets",
        "key affinity",
        "fetch order",
        "group assignment",
        "fenced commits",
        "restart",
        "bad input",
    }
)
"""The ``PubSubContract`` properties this adapter gives (all of them; see docs/adapters.md
for what lies outside the contract)."""

PARTITIONS_MAX = 256
FETCH_MAX_MESSAGES = 1_000
WAIT_POLL_S = 0.02
COMMIT_ATTEMPTS_MAX = 16
COMMITS_BUCKET = "commits"
_DESCRIPTION = re.compile(r"^blocks topic partitions=(\d+)$")

T = TypeVar("T")


_NO_MESSAGE_CODE = 10037
"""JetStream's error code for "no message found" (the stream is there, the record is not)."""


class NatsPubSub(NatsAdapter):
    """``blocks.pubsub.api.PubSub`` on JetStream; build it with ``await NatsPubSub.open()``."""

    properties = PROPERTIES

    def __init__(
        self,
        client: Client,
        *,
        namespace: str = "",
        clock: Clock | None = None,
        session_timeout_ms: int = 10_000,
        owns_client: bool = True,
    ) -> None:
        super().__init__(client, namespace=namespace, clock=clock, owns_client=owns_client)
        self._groups = GroupCoordinator(session_timeout_ms)
        self._round_robin = itertools.count()
        self._partitions: dict[str, int] = {}  # cache: a topic's count never changes
        self._kv: KeyValue | None = None
        self._publisher = JetStreamPublisher(
            client, self._js, self._clock, stream=self._stream, subject=self._subject
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _stream(self, topic: str, partition: int) -> str:
        return f"{self._namespace}{topic}-{partition}"

    def _subject(self, topic: str, partition: int) -> str:
        return f"{self._namespace}{topic}.{partition}"

    async def _commits(self) -> KeyValue:
        if self._kv is None:
            bucket = f"{self._namespace}{COMMITS_BUCKET}"
            self._kv = await self._call(
                self._js.create_key_value(bucket=bucket, storage=StorageType.FILE),
                "open the commits bucket",
            )
        return self._kv

    # -- topics -----------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        compact: bool = False,
    ) -> None:
        """Create one stream per partition; the same call again is a no-op."""
        check_nats_name(name, "a topic name")
        if type(partitions) is not int or not 1 <= partitions <= PARTITIONS_MAX:
            raise InvalidArgument(f"partitions must be within 1..{PARTITIONS_MAX}")
        if compact:
            raise InvalidArgument("JetStream keeps no compacted topics (compact=False only)")
        try:
            existing = await self.partitions(name)
        except NotFound:
            existing = None
        if existing is not None:
            if existing != partitions:
                raise AlreadyExists(f"topic {name!r} has {existing} partitions")
            return
        for partition in range(partitions):
            config = StreamConfig(
                name=self._stream(name, partition),
                subjects=[self._subject(name, partition)],
                storage=StorageType.FILE,
                description=f"blocks topic partitions={partitions}",
                max_age=None if retention_ms is None else retention_ms / 1000.0,
                max_bytes=retention_bytes,
            )
            try:
                await self._call(self._js.add_stream(config), "create a topic")
            except FailedPrecondition as error:  # a stream of that name, set up otherwise
                raise AlreadyExists(f"topic {name!r}: {error}") from error
        self._partitions[name] = partitions

    async def partitions(self, topic: str) -> int:
        check_nats_name(topic, "a topic name")
        cached = self._partitions.get(topic)
        if cached is not None:
            return cached
        try:
            info = await self._call(self._js.stream_info(self._stream(topic, 0)), "a topic")
        except NotFound as error:
            raise NotFound(f"no topic {topic!r}") from error
        match = _DESCRIPTION.match(info.config.description or "")
        if match is None:
            raise NotFound(f"stream of {topic!r} was not made by blocks")
        self._partitions[topic] = int(match.group(1))
        return self._partitions[topic]

    async def _check_partition(self, topic: str, partition: object) -> int:
        count = await self.partitions(topic)
        if type(partition) is not int or not 0 <= partition < count:
            raise InvalidArgument(f"partition must be within 0..{count - 1}")
        return partition

    # -- producing --------------------------------------------------------------------------

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        """Publish one record with an ack; ``(partition, offset)`` once stored."""
        count = await self.partitions(topic)
        if partition is None:
            if key is not None and not isinstance(key, bytes):
                raise InvalidArgument("a key is bytes or None")
            partition = next(self._round_robin) % count if key is None else key_hash(key) % count
        await self._check_partition(topic, partition)
        return partition, await self._publisher.publish(topic, partition, key, value)

    async def produce_batch(
        self, topic: str, partition: int, entries: list[tuple[bytes | None, bytes]]
    ) -> int:
        """Publish the records in order; return the first offset. Not atomic on JetStream: a
        failure midway leaves a prefix stored (docs/adapters.md); how the batch is pipelined
        and kept whole is ``JetStreamPublisher.publish_batch``."""
        await self._check_partition(topic, partition)
        if not entries:
            raise InvalidArgument("a batch holds at least one record")
        for key, value in entries:
            check_record(key, value)
        return await self._publisher.publish_batch(topic, partition, entries)

    # -- reading ----------------------------------------------------------------------------

    async def end_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        await self._check_partition(topic, partition)
        info = await self._call(self._js.stream_info(self._stream(topic, partition)), "offsets")
        next_offset = int(info.state.last_seq)
        first_offset = min(max(int(info.state.first_seq), 1) - 1, next_offset)
        return first_offset, next_offset

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_messages: int = 100,
        wait_ms: int = 0,
    ) -> list[Record]:
        await self._check_partition(topic, partition)
        check_fetch(offset, max_messages, wait_ms, FETCH_MAX_MESSAGES)
        # No bounds asked first: each read is the stream's "next message at or after this
        # sequence on the partition's subject", so a record removed by retention is stepped
        # over by the server, and "nothing at or after" ends the batch. One request per
        # record, plus one that finds the end when fewer than ``max_messages`` are there.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000.0
        stream = self._stream(topic, partition)
        subject = self._subject(topic, partition)
        records: list[Record] = []
        position = offset
        while len(records) < max_messages:
            try:
                message = await self._call(
                    self._js.get_msg(stream, position + 1, subject, next=True), "fetch"
                )
            except NotFound as error:
                if getattr(error.__cause__, "err_code", None) != _NO_MESSAGE_CODE:
                    raise  # the stream itself is gone
                if records or loop.time() >= deadline:
                    break
                await asyncio.sleep(WAIT_POLL_S)
                continue
            assert message.seq is not None, "JetStream answers a stored message's sequence"
            position = message.seq - 1
            headers = message.headers or {}
            raw_key = headers.get(KEY_HEADER)
            records.append(
                Record(
                    topic,
                    partition,
                    position,
                    None if raw_key is None else bytes.fromhex(raw_key),
                    message.data or b"",
                    int(headers.get(TIMESTAMP_HEADER, "0")),
                )
            )
            position += 1
        return records

    async def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """Binary search over the records' timestamps (non-decreasing for one producer)."""
        low, high = await self.end_offsets(topic, partition)
        while low < high:
            middle = (low + high) // 2
            found = await self.fetch(topic, partition, middle, 1)
            if found and found[0].timestamp_ms < timestamp_ms:
                low = middle + 1
            else:
                high = middle
        return low

    # -- groups -----------------------------------------------------------------------------

    async def join_group(self, group: str, topic: str, member: str) -> Assignment:
        check_nats_name(group, "a group name")
        count = await self.partitions(topic)
        return self._groups.join(group, topic, count, member, self._clock.now_ms())

    async def heartbeat(self, group: str, member: str) -> Assignment:
        return self._groups.heartbeat(group, member, self._clock.now_ms())

    async def leave_group(self, group: str, member: str) -> None:
        self._groups.leave(group, member, self._clock.now_ms())

    async def commit(
        self, group: str, member: str, generation: int, partition: int, offset: int
    ) -> int:
        """Fence in this client, then raise the stored offset by compare-and-set."""
        self._groups.expire(self._clock.now_ms())
        self._groups.commit(group, member, generation, partition, offset)
        topic = self._groups.topic_of(group)
        assert topic is not None, "a fenced commit has a group"
        kv = await self._commits()
        key = f"{group}.{topic}.{partition}"
        for _ in range(COMMIT_ATTEMPTS_MAX):
            stored, revision = await self._read_commit(kv, key)
            if stored is not None and stored >= offset:
                return stored
            try:
                if revision is None:
                    await self._call(kv.create(key, str(offset).encode()), "commit")
                else:
                    await self._call(kv.update(key, str(offset).encode(), last=revision), "commit")
                return offset
            except Conflict:
                continue  # another writer moved it: read again
        raise Conflict(f"commit of {key} lost {COMMIT_ATTEMPTS_MAX} races")

    async def _read_commit(self, kv: KeyValue, key: str) -> tuple[int | None, int | None]:
        try:
            entry = await self._call(kv.get(key), "read a commit")
        except NotFound:
            return None, None
        return int(entry.value or b"0"), entry.revision

    async def committed(self, group: str, topic: str, partition: int) -> int | None:
        check_nats_name(group, "a group name")
        await self._check_partition(topic, partition)
        stored, _ = await self._read_commit(await self._commits(), f"{group}.{topic}.{partition}")
        return stored

    def consumer(self, topic: str, group: str, **options: Any) -> AsyncIterator[Record]:
        return Consumer(self, topic, group, clock=self._clock, **options)

    async def close(self) -> None:
        await self._close_connection()
