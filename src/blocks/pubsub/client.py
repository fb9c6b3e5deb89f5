"""``connect``: the async client of a pub-sub server, implementing ``blocks.pubsub.api.PubSub``.

Given several addresses (the brokers of a cluster), the client talks to one and moves to the
next when a call finds it ``Unavailable``; any broker forwards partition calls to the
partition's leader. Produce and fetch travel on the broker's data path (framed msgpack over
``TcpTransport``, ``blocks.pubsub.datapath``; its port comes from the ``DataPath`` RPC), the
rest on gRPC; against a broker without a data path everything uses gRPC.

Producing goes through a ``blocks.pubsub.batching_producer.Producer``: concurrent ``produce``
calls to one partition are coalesced into batches, up to five batches per partition are in
flight, and the client is an idempotent producer (a random producer id and one sequence
counter per partition), so the batches that fail with ``Unavailable`` or ``Timeout`` are
resent in order under the same sequence numbers, long enough to ride out a leader election,
and the broker stores each once. ``subscribe`` streams one partition with credit-based flow control.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from blocks.core.data_path import ask_data_path, data_request
from blocks.core.errors import InvalidArgument, Unavailable
from blocks.core.hashing import key_hash
from blocks.core.net import TcpTransport
from blocks.core.rpc import connect_channel, mapped_errors
from blocks.pubsub import pubsub_pb2, pubsub_pb2_grpc
from blocks.pubsub.api import Assignment, Record
from blocks.pubsub.batching_producer import Entries, Producer, ProducerConfig
from blocks.pubsub.calls import PubSubCalls
from blocks.pubsub.consumer import Consumer
from blocks.pubsub.datapath import fetch_message, produce_message, records_from_wire
from blocks.pubsub.topics import TopicConfig, check_entries

__all__ = ["PubSubClient", "connect"]


def _record(topic: str, message: Any) -> Record:
    key = message.key if message.HasField("key") else None
    return Record(
        topic, message.partition, message.offset, key, message.value, message.timestamp_ms
    )


def _check_batch(partition: object, entries: object) -> None:
    """Refuse bad records before they join a batch, so they cannot fail others' records."""
    if type(partition) is not int or partition < 0:
        raise InvalidArgument(f"partition must be an integer >= 0, got {partition!r}")
    check_entries(entries)


class PubSubClient(PubSubCalls):
    """A ``PubSub`` served over gRPC; build it with ``connect``."""

    def __init__(
        self,
        address: str | Sequence[str],
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        producer: ProducerConfig | None = None,
        data_path: bool = True,
    ) -> None:
        self._addresses = [address] if isinstance(address, str) else list(address)
        self._current = 0
        self._token = token
        self._channels = {0: connect_channel(self._addresses[0], token=token)}
        self._stub: Any = pubsub_pb2_grpc.PubSubStub(self._channels[0])  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s
        self._data = TcpTransport(f"pubsub-client-{uuid.uuid4().hex[:8]}", None, token=token)
        # broker index -> the data path's node name ("" where gRPC is used instead)
        self._data_names: dict[int, str] = (
            {} if data_path else dict.fromkeys(range(len(self._addresses)), "")
        )
        self.producer = Producer(self._send_batch, producer)
        self._discovery = asyncio.Lock()
        self._partitions: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._sticky: dict[str, tuple[int, int]] = {}  # topic -> (partition, bytes sent to it)

    async def _failover(self, attempt_once: Callable[[int], Awaitable[Any]]) -> Any:
        """Run ``attempt_once(broker index)``, moving to the next broker on ``Unavailable``."""
        for attempt in range(len(self._addresses)):
            index = self._current
            try:
                return await attempt_once(index)
            except Unavailable:
                self._data_names.pop(index, None)  # a restarted broker may listen elsewhere
                if attempt == len(self._addresses) - 1:
                    raise
                await self._next_broker()
        raise AssertionError("unreachable")

    async def _call(self, method: str, request: Any, extra_s: float = 0.0) -> Any:
        async def once(index: int) -> Any:
            with mapped_errors():
                return await getattr(self._stub, method)(request, timeout=self._timeout_s + extra_s)

        return await self._failover(once)

    async def _data_call(
        self, message: Any, method: str, request: Callable[[], Any], extra_s: float = 0.0
    ) -> tuple[bool, Any]:
        """``(True, reply)`` from the data path, or ``(False, gRPC reply)`` where there is none."""

        async def once(index: int) -> tuple[bool, Any]:
            name = self._data_names.get(index)
            if name is None:
                async with self._discovery:  # one question at a time: add_peer drops a link
                    name = self._data_names.get(index)
                    if name is None:
                        name = self._data_names[index] = await self._ask_data_path(index)
            timeout_s = self._timeout_s + extra_s
            if name:
                return True, await data_request(self._data, name, message, timeout_s, what="broker")
            with mapped_errors():
                return False, await getattr(self._stub, method)(request(), timeout=timeout_s)

        result: tuple[bool, Any] = await self._failover(once)
        return result

    async def _ask_data_path(self, index: int) -> str:
        """The broker's data path node name, registered as a peer ("" if it has none)."""

        async def ask() -> Any:
            with mapped_errors():
                return await self._stub.DataPath(pubsub_pb2.Empty(), timeout=self._timeout_s)

        return await ask_data_path(ask, self._data, self._addresses[index])

    async def _next_broker(self) -> None:
        """Move to the next address (a cluster's brokers all serve every call). Channels stay
        open until ``close()`` so calls in flight on the previous one can finish."""
        self._current = (self._current + 1) % len(self._addresses)
        if self._current not in self._channels:
            address = self._addresses[self._current]
            self._channels[self._current] = connect_channel(address, token=self._token)
        channel = self._channels[self._current]
        self._stub = pubsub_pb2_grpc.PubSubStub(channel)  # type: ignore[no-untyped-call]

    async def _create_topic(self, config: TopicConfig) -> None:
        request = pubsub_pb2.CreateTopicRequest(
            name=config.name,
            partitions=config.partitions,
            retention_ms=config.retention_ms,
            retention_bytes=config.retention_bytes,
            compact=config.compact,
        )
        await self._call("CreateTopic", request)

    async def partitions(self, topic: str) -> int:
        if topic not in self._partitions:
            reply = await self._call("Metadata", pubsub_pb2.TopicRequest(topic=topic))
            self._partitions[topic] = int(reply.partitions)
        return self._partitions[topic]

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        if partition is None:
            count = await self.partitions(topic)
            if key is not None:
                partition = key_hash(key) % count
            else:
                partition = self._keyless_partition(topic, count, len(value))
        entries = [(key, value)]
        _check_batch(partition, entries)
        return partition, await self.producer.produce(topic, partition, entries)

    def _keyless_partition(self, topic: str, count: int, size: int) -> int:
        """Round robin by batch (Kafka's sticky partitioner): keyless records go to one
        partition until ``sticky_bytes`` of them have, then to the next. Records to one
        partition coalesce into one batch, one request and one fsync; spread one by one over
        P partitions, the same records made P times as many requests (``docs/pubsub.md``)."""
        sticky_bytes = self.producer.config.sticky_bytes
        if sticky_bytes == 0:
            return next(self._round_robin) % count
        current = self._sticky.get(topic)
        partition, sent = current if current else (next(self._round_robin) % count, 0)
        if sent >= sticky_bytes:
            partition, sent = (partition + 1) % count, 0
        self._sticky[topic] = (partition, sent + max(size, 1))
        return partition

    async def produce_batch(
        self, topic: str, partition: int, entries: list[tuple[bytes | None, bytes]]
    ) -> int:
        _check_batch(partition, entries)
        return await self.producer.produce(topic, partition, list(entries))

    async def _send_batch(
        self, topic: str, partition: int, entries: Entries, producer_id: str, sequence: int
    ) -> int:
        """One attempt at one batch (the ``Producer``'s ``send``)."""

        def request() -> Any:
            return pubsub_pb2.ProduceRequest(
                topic=topic,
                partition=partition,
                entries=[pubsub_pb2.Entry(key=k, value=v) for k, v in entries],
                producer_id=producer_id,
                sequence=sequence,
            )

        message = produce_message(topic, partition, entries, producer_id, sequence)
        on_data_path, reply = await self._data_call(message, "Produce", request)
        return int(reply if on_data_path else reply.base_offset)

    async def _fetch(
        self, topic: str, partition: int, offset: int, max_messages: int, wait_ms: int
    ) -> list[Record]:
        if offset < 0 or max_messages < 1 or wait_ms < 0:
            raise InvalidArgument("offset and wait_ms must be >= 0, max_messages >= 1")

        def request() -> Any:
            return pubsub_pb2.FetchRequest(
                topic=topic,
                partition=partition,
                offset=offset,
                max_messages=max_messages,
                wait_ms=wait_ms,
            )

        message = fetch_message(topic, partition, offset, max_messages, wait_ms)
        on_data_path, reply = await self._data_call(
            message, "Fetch", request, extra_s=wait_ms / 1000.0
        )
        if on_data_path:
            return records_from_wire(topic, partition, reply)
        return [_record(topic, r) for r in reply.records]

    async def subscribe(
        self, topic: str, partition: int, offset: int = 0, *, window: int = 1000
    ) -> AsyncIterator[Record]:
        """Stream a partition from ``offset``; at most ``window`` records are ever in flight."""
        if window < 2:
            raise InvalidArgument("window must be at least 2")
        credits: asyncio.Queue[Any] = asyncio.Queue()
        await credits.put(
            pubsub_pb2.SubscribeRequest(
                topic=topic, partition=partition, offset=offset, credits=window
            )
        )

        async def requests() -> AsyncIterator[Any]:
            while (item := await credits.get()) is not None:
                yield item

        call = self._stub.Subscribe(requests())
        consumed = 0
        try:
            with mapped_errors():
                async for message in call:
                    yield _record(topic, message)
                    consumed += 1
                    if consumed >= window // 2:  # top the window up again
                        await credits.put(pubsub_pb2.SubscribeRequest(credits=consumed))
                        consumed = 0
        finally:
            await credits.put(None)
            call.cancel()

    async def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        request = pubsub_pb2.OffsetForTimeRequest(
            topic=topic, partition=partition, timestamp_ms=timestamp_ms
        )
        return int((await self._call("OffsetForTime", request)).offset)

    async def end_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        request = pubsub_pb2.PartitionRequest(topic=topic, partition=partition)
        reply = await self._call("EndOffsets", request)
        return int(reply.first_offset), int(reply.next_offset)

    async def join_group(self, group: str, topic: str, member: str) -> Assignment:
        request = pubsub_pb2.GroupRequest(group=group, topic=topic, member=member)
        reply = await self._call("JoinGroup", request)
        return Assignment(group, member, int(reply.generation), tuple(reply.partitions))

    async def heartbeat(self, group: str, member: str) -> Assignment:
        reply = await self._call("Heartbeat", pubsub_pb2.GroupRequest(group=group, member=member))
        return Assignment(group, member, int(reply.generation), tuple(reply.partitions))

    async def leave_group(self, group: str, member: str) -> None:
        await self._call("LeaveGroup", pubsub_pb2.GroupRequest(group=group, member=member))

    async def commit(
        self, group: str, member: str, generation: int, partition: int, offset: int
    ) -> int:
        if min(generation, partition, offset) < 0:
            raise InvalidArgument("generation, partition and offset must be >= 0")
        request = pubsub_pb2.CommitRequest(
            group=group, member=member, generation=generation, partition=partition, offset=offset
        )
        return int((await self._call("Commit", request)).offset)

    async def committed(self, group: str, topic: str, partition: int) -> int | None:
        request = pubsub_pb2.CommittedRequest(group=group, topic=topic, partition=partition)
        reply = await self._call("Committed", request)
        return int(reply.offset) if reply.HasField("offset") else None

    def consumer(self, topic: str, group: str, **options: Any) -> Consumer:
        return Consumer(self, topic, group, **options)

    async def close(self) -> None:
        await self.producer.close(self._timeout_s)
        await self._data.close()
        for channel in self._channels.values():
            await channel.close()


async def connect(
    addresses: Sequence[str] | str,
    *,
    token: str | None = None,
    timeout_s: float = 10.0,
    producer: ProducerConfig | None = None,
    data_path: bool = True,
) -> PubSubClient:
    """A client for the pub-sub brokers at ``addresses`` (``host:port``; one is enough, the
    others are where it goes when that one is unavailable). ``producer`` tunes batching
    (``linger_ms``, ``batch_bytes_max``, ``in_flight_max``, ...); ``data_path=False`` keeps
    produce and fetch on gRPC."""
    if isinstance(addresses, str):
        addresses = [addresses]
    if not addresses:
        raise InvalidArgument("connect needs at least one address")
    return PubSubClient(
        list(addresses), token=token, timeout_s=timeout_s, producer=producer, data_path=data_path
    )
