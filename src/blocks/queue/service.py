"""The queue gRPC service: a ``LocalQueue`` behind ``blocks.core.server``.

Each RPC is one call on the ``LocalQueue`` (which logs, waits for durability and long-polls);
this module only converts protobuf messages. Errors leave as the ``BlocksError`` the queue
raised and are mapped to gRPC codes by the server's interceptor. Proto3 cannot tell an unset
``uint32`` from 0, so ``visibility_ms`` and the dead-letter name use ``optional`` fields and
``visibility_ms`` 0 in ``CreateQueue`` means the default.

Beside gRPC, the server listens on its data path (``blocks.queue.datapath``: coalesced calls
as framed msgpack on a ``TcpTransport``, same host, ``data_port``, same token); ``DataPath``
tells clients its port, 0 when it is off.

``build_cluster_server`` serves a ``ReplicatedQueue`` node the same way: every RPC and data
path call is served by any node (see ``blocks.queue.replicated``).
"""

from __future__ import annotations

import os
import random
from typing import Any

from blocks.core.clock import Clock
from blocks.core.data_path import build_data_path_server, data_path_address
from blocks.core.log import FsyncPolicy
from blocks.core.net import TcpTransport
from blocks.core.server import Hook, Server
from blocks.queue import queue_pb2, queue_pb2_grpc
from blocks.queue.datapath import QueueDataPathHandler
from blocks.queue.local import LocalQueue
from blocks.queue.replicated import SNAPSHOT_EVERY, QueueNode, ReplicatedQueue

__all__ = ["QueueService", "build_cluster_server", "build_server"]

_EMPTY = queue_pb2.Empty()


def _optional(request: Any, field: str) -> Any:
    return getattr(request, field) if request.HasField(field) else None


class QueueService(queue_pb2_grpc.QueueServicer):
    def __init__(self, queue: QueueNode, data_path: TcpTransport | None = None) -> None:
        self.queue = queue
        self.data_path = data_path

    async def DataPath(self, request: Any, context: Any) -> Any:
        port, name = data_path_address(self.data_path)
        return queue_pb2.DataPathReply(port=port, name=name)

    async def CreateQueue(self, request: Any, context: Any) -> Any:  # gRPC names are CamelCase
        await self.queue.create_queue(
            request.name,
            visibility_ms=request.visibility_ms or 30_000,
            max_receives=request.max_receives,
            dead_letter=_optional(request, "dead_letter"),
            fifo=request.fifo,
            dedup_window_ms=request.dedup_window_ms or 300_000,
        )
        return _EMPTY

    async def DeleteQueue(self, request: Any, context: Any) -> Any:
        await self.queue.delete_queue(request.name)
        return _EMPTY

    async def Send(self, request: Any, context: Any) -> Any:
        message_id = await self.queue.send(
            request.name,
            request.body,
            delay_ms=request.delay_ms,
            group=_optional(request, "group"),
            dedup_id=_optional(request, "dedup_id"),
            priority=request.priority,
        )
        return queue_pb2.SendReply(id=message_id)

    async def Receive(self, request: Any, context: Any) -> Any:
        messages = await self.queue.receive(
            request.name,
            max_messages=request.max_messages or 1,
            wait_ms=request.wait_ms,
            visibility_ms=_optional(request, "visibility_ms"),
        )
        return queue_pb2.ReceiveReply(
            messages=[
                queue_pb2.Delivered(
                    id=m.id,
                    receipt=m.receipt,
                    body=m.body,
                    receive_count=m.receive_count,
                    group=m.group,
                    priority=m.priority,
                    sent_ms=m.sent_ms,
                )
                for m in messages
            ]
        )

    async def Ack(self, request: Any, context: Any) -> Any:
        await self.queue.ack(request.name, request.receipt)
        return _EMPTY

    async def Nack(self, request: Any, context: Any) -> Any:
        await self.queue.nack(request.name, request.receipt, delay_ms=request.delay_ms)
        return _EMPTY

    async def ExtendVisibility(self, request: Any, context: Any) -> Any:
        await self.queue.extend_visibility(request.name, request.receipt, request.visibility_ms)
        return _EMPTY


def build_server(
    data_dir: str | os.PathLike[str] | None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    fsync: FsyncPolicy = "batch",
    clock: Clock | None = None,
    data_port: int | None = 0,
) -> tuple[Server, LocalQueue]:
    """A ``Server`` (not started) serving a queue stored in ``data_dir`` (memory if None);
    its data path listens on ``data_port`` (0: any free port; None: no data path)."""
    queue = LocalQueue(data_dir, fsync=fsync, clock=clock)
    return _serve(queue, host, port, token, clock, data_port), queue


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
    data_port: int | None = 0,
    snapshot_every: int = SNAPSHOT_EVERY,
    segment_bytes_max: int = 16 << 20,
    sync_interval_ms: int | None = None,
) -> tuple[Server, ReplicatedQueue]:
    """A ``Server`` (not started) for one node of a replicated queue
    (``blocks.queue.replicated``): clients call any node; nodes replicate the queue's log over
    a ``TcpTransport`` on ``cluster_listen`` (same token); ``snapshot_every`` applied records
    between snapshots; the log's segments roll at ``segment_bytes_max`` (a log is cut below
    a snapshot by whole segments); ``sync_interval_ms`` with ``fsync="never"``: fsync the
    log on that interval (see ``ReplicatedQueue``)."""
    transport = TcpTransport(node, cluster_listen, peers, token)
    queue = ReplicatedQueue(
        data_dir,
        transport,
        [node, *peers],
        fsync=fsync,
        rng=random.Random(),
        snapshot_every=snapshot_every,
        segment_bytes_max=segment_bytes_max,
        sync_interval_ms=sync_interval_ms,
    )

    async def open_queue() -> None:
        await queue.open()

    server = _serve(queue, host, port, token, None, data_port, start=open_queue, cluster=transport)
    return server, queue


def _serve(
    queue: QueueNode,
    host: str,
    port: int,
    token: str | None,
    clock: Clock | None,
    data_port: int | None,
    *,
    start: Hook | None = None,
    cluster: TcpTransport | None = None,
) -> Server:
    return build_data_path_server(
        "queue",
        listen=(host, port),
        token=token,
        clock=clock,
        data_port=data_port,
        handler=QueueDataPathHandler(queue),
        add_servicer=queue_pb2_grpc.add_QueueServicer_to_server,
        servicer=lambda data_path: QueueService(queue, data_path),
        health_name="blocks.queue.Queue",
        start=start,
        stop=queue.close,
        cluster=cluster,
    )
