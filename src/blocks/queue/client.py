"""``connect``: the async client of a queue server, implementing ``blocks.queue.api.Queue``.

Sends, receives, acks, nacks and extensions travel on the server's data path (framed msgpack
over ``TcpTransport``, coalesced by a ``blocks.queue.datapath.CallBatcher``: the calls made
while a frame is in flight leave together in the next one); queue management stays on gRPC,
and so does everything against a server without a data path. Errors arrive as the
``BlocksError`` class the server raised. A long poll (``wait_ms``) travels alone and gets a
deadline of ``wait_ms`` plus the client's ``timeout_s``; a receive with ``wait_ms`` first goes
in the next frame without waiting (where a busy queue answers it, sharing the frame's log
write, fsync and, replicated, replication round with the other calls) and long-polls alone,
for the rest of ``wait_ms``, only if that found nothing.

Given several addresses (the nodes of a replicated queue, ``blocks.queue.replicated``, any of
which serves any call), the client talks to one; a call that fails with ``Unavailable`` or
``Timeout`` moves it to the next, and the caller retries (such a call may or may not have been
applied, as the API says). Clients follow the leader: whenever the client (re)discovers a
node's data path, it asks the node's view of the log (``describe``) and, while the node says
it is a follower, moves on to the next address, at most once round the list. A call answered
by the leader saves a forward to it and the round trip in which a follower learns that its
records are committed (about half the time of a send on a 3-node cluster).
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from blocks.core.data_path import ask_data_path, data_request
from blocks.core.errors import BlocksError, InvalidArgument, Timeout, Unavailable
from blocks.core.net import TcpTransport
from blocks.core.rpc import connect_channel, mapped_errors
from blocks.queue import queue_pb2, queue_pb2_grpc
from blocks.queue.api import Message
from blocks.queue.calls import QueueCalls
from blocks.queue.config import QueueConfig
from blocks.queue.datapath import CallBatcher, message_from_wire

__all__ = ["QueueClient", "connect"]

OLD_CHANNELS_MAX = 8  # channels of nodes left behind, kept open for calls still on them
DESCRIBE_TIMEOUT_S = 2.0  # the leader probe at discovery; past it the client stays put


class QueueClient(QueueCalls):
    """A ``Queue`` served over gRPC; build it with ``connect``."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        data_path: bool = True,
        fallbacks: Sequence[str] = (),
    ) -> None:
        self._addresses = [address, *fallbacks]
        self._token = token
        self._use_data_path = data_path
        self._old_channels: collections.deque[Any] = collections.deque()
        self._closing: set[asyncio.Task[Any]] = set()  # old channels being closed
        self._address = address
        self._channel = connect_channel(address, token=token)
        self._stub: Any = queue_pb2_grpc.QueueStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s
        self._data = TcpTransport(f"queue-client-{uuid.uuid4().hex[:8]}", None, token=token)
        self._data_name: str | None = None if data_path else ""  # "": use gRPC
        self._batcher = CallBatcher(self._send_calls)
        self._discovery = asyncio.Lock()

    async def _call(self, method: str, request: Any, extra_s: float = 0.0) -> Any:
        address = self._address
        try:
            with mapped_errors():
                stub = self._stub
                return await getattr(stub, method)(request, timeout=self._timeout_s + extra_s)
        except (Unavailable, Timeout):
            self._next_address(address)
            raise

    def _next_address(self, failed: str) -> None:
        """Talk to the node after ``failed`` from now on (if there is another, and no other
        failure moved on already)."""
        if len(self._addresses) < 2 or failed != self._address:
            return
        index = (self._addresses.index(failed) + 1) % len(self._addresses)
        self._address = self._addresses[index]
        # Calls in flight may still use the old channel: it is closed only OLD_CHANNELS_MAX
        # moves later (long after their deadlines) or at close().
        self._old_channels.append(self._channel)
        if len(self._old_channels) > OLD_CHANNELS_MAX:
            closing = asyncio.ensure_future(self._old_channels.popleft().close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._channel = connect_channel(self._address, token=self._token)
        self._stub = queue_pb2_grpc.QueueStub(self._channel)  # type: ignore[no-untyped-call]
        self._data_name = None if self._use_data_path else ""

    async def _data_path(self) -> str:
        """The server's data path node name, registered as a peer ("" when it has none)."""
        if self._data_name is not None:
            return self._data_name
        async with self._discovery:  # one question at a time: add_peer drops a connection
            name = await self._ask_data_path()
            if name and len(self._addresses) > 1:
                name = await self._follow_leader(name)
            return name

    async def _follow_leader(self, name: str) -> str:
        """Move on from a node that says it follows, at most once round the addresses; stop
        at a leader, at a node with no view (single node, election) or at any error (the
        call then goes to where the client stands, as without this)."""
        for _ in range(len(self._addresses) - 1):
            try:
                view = await self._data.request(name, {"op": "describe"}, DESCRIBE_TIMEOUT_S)
            except BlocksError:
                return name
            if not isinstance(view, dict) or view.get("role") != "follower":
                return name
            if not view.get("leader"):
                return name
            self._next_address(self._address)
            try:
                name = await self._ask_data_path()
            except BlocksError:
                self._data_name = None  # the next call asks again, where the client now stands
                return await self._ask_data_path()
            if not name:
                return name
        return name

    async def _ask_data_path(self) -> str:
        if self._data_name is None:
            self._data_name = await ask_data_path(
                lambda: self._call("DataPath", queue_pb2.Empty()), self._data, self._address
            )
        return self._data_name

    async def _send_calls(self, calls: list[Any]) -> list[Any]:
        reply: list[Any] = await self._data_request({"op": "calls", "c": calls}, self._timeout_s)
        return reply

    async def _data_request(self, message: Any, timeout_s: float) -> Any:
        """One request on the data path. A restarted server listens elsewhere (``Unavailable``)
        or under a new node name (``PeerError`` at the greeting): either way the next call asks
        the server for its data path again, and this one raises ``Unavailable`` (retryable; a
        send may or may not have been applied, as the API says of ``Unavailable``)."""
        address = self._address
        try:
            return await data_request(self._data, await self._data_path(), message, timeout_s)
        except (Unavailable, Timeout):
            self._data_name = None
            self._next_address(address)
            raise

    async def _fast(
        self, call: list[Any], method: str, request: Callable[[], Any], extra_s: float = 0.0
    ) -> tuple[bool, Any]:
        """``(True, result)`` through the batcher, or ``(False, gRPC reply)`` without one."""
        if await self._data_path():
            return True, await self._batcher.call(call)
        return False, await self._call(method, request(), extra_s)

    # -- the Queue interface (create_queue, send, receive: ``QueueCalls``) -------------------

    async def _create(self, config: QueueConfig) -> None:
        if config.visibility_ms <= 0 or config.dedup_window_ms <= 0:
            raise InvalidArgument("visibility_ms and dedup_window_ms must be positive")
        await self._call(
            "CreateQueue",
            queue_pb2.CreateQueueRequest(
                name=config.name,
                visibility_ms=config.visibility_ms,
                max_receives=config.max_receives,
                dead_letter=config.dead_letter,
                fifo=config.fifo,
                dedup_window_ms=config.dedup_window_ms,
            ),
        )

    async def delete_queue(self, name: str) -> None:
        await self._call("DeleteQueue", queue_pb2.NameRequest(name=name))

    async def _send(self, call: list[Any]) -> str:
        _, name, body, delay_ms, group, dedup_id, priority = call
        if not 0 <= priority <= 255 or delay_ms < 0:
            raise InvalidArgument("priority must be within 0..255 and delay_ms >= 0")
        if self._data_name:  # the data path is known: straight into the next frame
            return str(await self._batcher.call(call))

        def request() -> Any:
            return queue_pb2.SendRequest(
                name=name,
                body=body,
                delay_ms=delay_ms,
                group=group,
                dedup_id=dedup_id,
                priority=priority,
            )

        fast, reply = await self._fast(call, "Send", request)
        return str(reply if fast else reply.id)

    async def _receive(self, call: list[Any], wait_ms: int) -> list[Message]:
        _, name, max_messages, visibility_ms = call
        if max_messages < 1 or wait_ms < 0 or (visibility_ms is not None and visibility_ms < 0):
            raise InvalidArgument("max_messages must be >= 1, wait_ms and visibility_ms >= 0")
        if await self._data_path():
            # First without waiting, in the next frame with the other calls (a lone call is
            # a log write and an fsync of its own, replicated a replication round); a long
            # poll, alone in its frame, only when that found nothing.
            started = time.monotonic()
            found = await self._batcher.call(call)
            wait_ms -= int((time.monotonic() - started) * 1000)
            if not found and wait_ms > 0:
                poll = {"op": "receive", "name": name, "n": max_messages, "w": wait_ms}
                poll["v"] = visibility_ms
                timeout_s = self._timeout_s + wait_ms / 1000.0
                found = await self._data_request(poll, timeout_s)
            return [message_from_wire(m) for m in found]
        request = queue_pb2.ReceiveRequest(
            name=name, max_messages=max_messages, wait_ms=wait_ms, visibility_ms=visibility_ms
        )
        reply = await self._call("Receive", request, extra_s=wait_ms / 1000.0)
        return [
            Message(
                id=m.id,
                receipt=m.receipt,
                body=m.body,
                receive_count=m.receive_count,
                group=m.group if m.HasField("group") else None,
                priority=m.priority,
                sent_ms=m.sent_ms,
            )
            for m in reply.messages
        ]

    async def ack(self, name: str, receipt: str) -> None:
        def request() -> Any:
            return queue_pb2.ReceiptRequest(name=name, receipt=receipt)

        await self._fast(["ack", name, receipt], "Ack", request)

    async def nack(self, name: str, receipt: str, *, delay_ms: int = 0) -> None:
        if delay_ms < 0:
            raise InvalidArgument("delay_ms must be >= 0")

        def request() -> Any:
            return queue_pb2.NackRequest(name=name, receipt=receipt, delay_ms=delay_ms)

        await self._fast(["nack", name, receipt, delay_ms], "Nack", request)

    async def extend_visibility(self, name: str, receipt: str, visibility_ms: int) -> None:
        if visibility_ms < 0:
            raise InvalidArgument("visibility_ms must be >= 0")

        def request() -> Any:
            return queue_pb2.ExtendRequest(name=name, receipt=receipt, visibility_ms=visibility_ms)

        await self._fast(["extend", name, receipt, visibility_ms], "ExtendVisibility", request)

    async def describe(self) -> dict[str, Any]:
        """The connected node's view of a replicated queue's log (``role``, ``epoch``,
        ``leader``, ``hw``, ``applied``); ``{}`` from a single node (data path only)."""
        if not await self._data_path():
            raise InvalidArgument("describe needs the server's data path")
        reply: dict[str, Any] = await self._data_request({"op": "describe"}, self._timeout_s)
        return reply

    async def close(self) -> None:
        self._batcher.close()
        await self._data.close()
        await self._channel.close()
        while self._old_channels:
            await self._old_channels.popleft().close()
        await asyncio.gather(*self._closing, return_exceptions=True)


async def connect(
    addresses: Sequence[str] | str,
    *,
    token: str | None = None,
    timeout_s: float = 10.0,
    data_path: bool = True,
) -> QueueClient:
    """A client for the queue server at the first of ``addresses`` (``host:port``); further
    addresses (other nodes of a replicated queue) are where it goes when a call finds the
    current one unavailable (see the module docs)."""
    if isinstance(addresses, str):
        addresses = [addresses]
    if not addresses:
        raise InvalidArgument("connect needs at least one address")
    return QueueClient(
        addresses[0],
        token=token,
        timeout_s=timeout_s,
        data_path=data_path,
        fallbacks=list(addresses[1:]),
    )
