"""The pub-sub gRPC service: a ``LocalBroker`` behind ``blocks.core.server``.

Each unary RPC is one broker call. ``Subscribe`` is the streaming path with flow control:
the client's first message names the partition and offset and grants credits; the server
sends at most as many records as it has credits for, then waits for more credits (long
polling for new records while it has some). So the records buffered for a subscriber are
bounded by the credits it granted, however slow it is.

Beside gRPC, each broker serves its data path (``blocks.pubsub.datapath``: produce and fetch
as framed msgpack on a ``TcpTransport``, same host, ``data_port``, same token); ``DataPath``
tells clients its port, 0 when it is off.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from blocks.core.clock import Clock
from blocks.core.data_path import build_data_path_server, data_path_address
from blocks.core.errors import InvalidArgument
from blocks.core.log import FsyncPolicy
from blocks.core.net import TcpTransport
from blocks.core.server import Hook, Server
from blocks.pubsub import pubsub_pb2, pubsub_pb2_grpc
from blocks.pubsub.api import Assignment, Record
from blocks.pubsub.cluster import ClusterBroker, ReplicationConfig
from blocks.pubsub.datapath import DataPathHandler
from blocks.pubsub.local import LocalBroker

__all__ = ["CREDITS_MAX", "PubSubService", "build_cluster_server", "build_server"]

CREDITS_MAX = 100_000  # credits one subscriber may hold
_EMPTY = pubsub_pb2.Empty()


def record_message(record: Record) -> Any:
    return pubsub_pb2.Record(
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        timestamp_ms=record.timestamp_ms,
    )


def _assignment(assignment: Assignment) -> Any:
    return pubsub_pb2.AssignmentReply(
        generation=assignment.generation, partitions=list(assignment.partitions)
    )


class PubSubService(pubsub_pb2_grpc.PubSubServicer):
    def __init__(self, broker: LocalBroker, data_path: TcpTransport | None = None) -> None:
        self.broker = broker
        self.data_path = data_path

    async def DataPath(self, request: Any, context: Any) -> Any:
        port, name = data_path_address(self.data_path)
        return pubsub_pb2.DataPathReply(port=port, name=name)

    async def CreateTopic(self, request: Any, context: Any) -> Any:  # gRPC names are CamelCase
        await self.broker.create_topic(
            request.name,
            request.partitions or 1,
            retention_ms=request.retention_ms if request.HasField("retention_ms") else None,
            retention_bytes=(
                request.retention_bytes if request.HasField("retention_bytes") else None
            ),
            compact=request.compact,
        )
        return _EMPTY

    async def Metadata(self, request: Any, context: Any) -> Any:
        return pubsub_pb2.MetadataReply(partitions=await self.broker.partitions(request.topic))

    async def Produce(self, request: Any, context: Any) -> Any:
        entries = [(e.key if e.HasField("key") else None, e.value) for e in request.entries]
        base = await self.broker.produce_batch(
            request.topic,
            request.partition,
            entries,
            producer_id=request.producer_id if request.HasField("producer_id") else None,
            sequence=request.sequence,
        )
        return pubsub_pb2.ProduceReply(base_offset=base)

    async def Fetch(self, request: Any, context: Any) -> Any:
        records = await self.broker.fetch(
            request.topic,
            request.partition,
            request.offset,
            request.max_messages or 100,
            request.wait_ms,
        )
        return pubsub_pb2.FetchReply(records=[record_message(r) for r in records])

    async def Subscribe(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        first = await anext(requests, None)
        if first is None:
            return
        topic, partition, offset = first.topic, first.partition, first.offset
        credits = first.credits
        granted: asyncio.Queue[int] = asyncio.Queue(maxsize=64)

        async def read_credits() -> None:
            async for more in requests:
                await granted.put(more.credits)

        reader = asyncio.ensure_future(read_credits())
        try:
            while True:
                while credits <= 0 or not granted.empty():
                    if reader.done() and granted.empty():
                        return
                    credits += await granted.get()
                    if credits > CREDITS_MAX:
                        raise InvalidArgument(f"more than {CREDITS_MAX} credits outstanding")
                records = await self.broker.fetch(
                    topic, partition, offset, min(credits, 1000), wait_ms=200
                )
                for record in records:
                    yield record_message(record)
                if records:
                    offset = records[-1].offset + 1
                    credits -= len(records)
        finally:
            reader.cancel()

    async def OffsetForTime(self, request: Any, context: Any) -> Any:
        offset = await self.broker.offset_for_time(
            request.topic, request.partition, request.timestamp_ms
        )
        return pubsub_pb2.OffsetReply(offset=offset)

    async def EndOffsets(self, request: Any, context: Any) -> Any:
        first, next_offset = await self.broker.end_offsets(request.topic, request.partition)
        return pubsub_pb2.EndOffsetsReply(first_offset=first, next_offset=next_offset)

    async def JoinGroup(self, request: Any, context: Any) -> Any:
        return _assignment(
            await self.broker.join_group(request.group, request.topic, request.member)
        )

    async def Heartbeat(self, request: Any, context: Any) -> Any:
        return _assignment(await self.broker.heartbeat(request.group, request.member))

    async def LeaveGroup(self, request: Any, context: Any) -> Any:
        await self.broker.leave_group(request.group, request.member)
        return _EMPTY

    async def Commit(self, request: Any, context: Any) -> Any:
        stored = await self.broker.commit(
            request.group, request.member, request.generation, request.partition, request.offset
        )
        return pubsub_pb2.OffsetReply(offset=stored)

    async def Committed(self, request: Any, context: Any) -> Any:
        offset = await self.broker.committed(request.group, request.topic, request.partition)
        return pubsub_pb2.CommittedReply(offset=offset)


def build_server(
    data_dir: str | os.PathLike[str] | None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    fsync: FsyncPolicy = "batch",
    clock: Clock | None = None,
    session_timeout_ms: int = 10_000,
    data_port: int | None = 0,
) -> tuple[Server, LocalBroker]:
    """A ``Server`` (not started) serving a broker stored in ``data_dir`` (memory if None);
    its data path listens on ``data_port`` (0: any free port; None: no data path)."""
    broker = LocalBroker(data_dir, fsync=fsync, clock=clock, session_timeout_ms=session_timeout_ms)
    return _serve_broker(broker, host, port, token, clock, data_port=data_port), broker


def build_cluster_server(
    data_dir: str | os.PathLike[str],
    *,
    node: str,
    cluster_listen: tuple[str, int],
    peers: dict[str, tuple[str, int]],
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    fsync: FsyncPolicy = "batch",
    replication: ReplicationConfig | None = None,
    data_port: int | None = 0,
) -> tuple[Server, ClusterBroker]:
    """A ``Server`` (not started) for one broker of a replicated cluster: clients call it over
    gRPC, brokers replicate over a ``TcpTransport`` on ``cluster_listen`` (same token)."""
    transport = TcpTransport(node, cluster_listen, peers, token)
    broker = ClusterBroker(
        data_dir, transport, [node, *peers], fsync=fsync, replication=replication
    )

    server = _serve_broker(
        broker, host, port, token, None, start=broker.start, data_port=data_port, cluster=transport
    )
    return server, broker


def _serve_broker(
    broker: LocalBroker,
    host: str,
    port: int,
    token: str | None,
    clock: Clock | None,
    start: Hook | None = None,
    *,
    data_port: int | None = 0,
    cluster: TcpTransport | None = None,
) -> Server:
    return build_data_path_server(
        "pubsub",
        listen=(host, port),
        token=token,
        clock=clock,
        data_port=data_port,
        handler=DataPathHandler(broker),
        add_servicer=pubsub_pb2_grpc.add_PubSubServicer_to_server,
        servicer=lambda data_path: PubSubService(broker, data_path),
        health_name="blocks.pubsub.PubSub",
        start=start,
        stop=broker.close,
        cluster=cluster,
    )
