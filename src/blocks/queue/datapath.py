"""The queue data path: calls as framed msgpack over ``TcpTransport``, coalesced per loop turn.

Theory of operation
-------------------
gRPC stays the queue's public, language-neutral API, but a unary gRPC call costs the Python
client and server several times what a pipelined frame of the core transport costs, and a
work queue's calls are tiny (a 100-byte send, an ack). So each queue server also listens on a
``TcpTransport`` (the ``DataPath`` RPC tells its port) and the Python client sends its calls
there, *coalesced*: every call made while a batch is in flight waits in the ``CallBatcher``
and leaves with the others in one frame. The server runs a frame's calls in order with
``LocalQueue.run_many``: one log write, one durable point, one reply frame. Each call still
succeeds or fails on its own, and a caller's own calls keep their order (it awaits each).

Requests are msgpack maps:

``{"op": "calls", "c": [call, ...]}``
    Wire calls as ``LocalQueue.command_for`` lists them; the reply holds one ``[True,
    result]`` or ``[False, error]`` per call (results: a send's id, a receive's messages as
    ``[id, receipt, body, receive_count, group, priority, sent_ms]``, else None).
``{"op": "receive", "name": ..., "n": max_messages, "w": wait_ms, "v": visibility_ms|None}``
    A long poll, alone in its frame so that it holds up nobody: a list of messages.
``{"op": "describe"}``
    A replicated node's view of the log (role, epoch, leader, high watermark, applied);
    ``{}`` from a single node.

Anything malformed is ``InvalidArgument`` with nothing done. The transport authenticates the
gRPC server's bearer token and bounds frames and requests in flight; ``LocalQueue`` bounds the
calls in one batch and in flight.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from blocks.core.errors import FailedPrecondition, InvalidArgument
from blocks.core.transport import error_from_wire, error_to_wire
from blocks.queue.api import Message
from blocks.queue.commands import CALLS_PER_BATCH_MAX

if TYPE_CHECKING:
    from blocks.queue.replicated import QueueNode

__all__ = ["CallBatcher", "QueueDataPathHandler", "message_from_wire", "message_to_wire"]


def message_to_wire(message: Message) -> list[Any]:
    return [
        message.id,
        message.receipt,
        message.body,
        message.receive_count,
        message.group,
        message.priority,
        message.sent_ms,
    ]


def message_from_wire(wire: Any) -> Message:
    if not isinstance(wire, list) or len(wire) != 7:
        raise InvalidArgument("a delivered message is a list of 7 fields")
    id_, receipt, body, receive_count, group, priority, sent_ms = wire
    return Message(id_, receipt, body, receive_count, group, priority, sent_ms)


def _result_to_wire(result: Any) -> Any:
    if isinstance(result, list):
        return [message_to_wire(m) for m in result]
    return result


class QueueDataPathHandler:
    """The ``TcpTransport`` handler of a queue server's data path (see module docs)."""

    def __init__(self, queue: QueueNode) -> None:
        self.queue = queue

    async def __call__(self, source: str, message: Any) -> Any:
        if not isinstance(message, dict):
            raise InvalidArgument("a data path request is a map")
        op = message.get("op")
        if op == "calls":
            outcomes = await self.queue.run_many(message.get("c"))
            return [
                [True, _result_to_wire(value)] if ok else [False, error_to_wire(value)]
                for ok, value in outcomes
            ]
        if op == "receive":
            wait_ms, max_messages = message.get("w"), message.get("n")
            if type(wait_ms) is not int or type(max_messages) is not int:
                raise InvalidArgument("a long poll needs integer n and w")
            visibility_ms = message.get("v")
            if visibility_ms is not None and type(visibility_ms) is not int:
                raise InvalidArgument("visibility_ms must be an integer or None")
            found = await self.queue.receive(
                message.get("name"),  # type: ignore[arg-type]  # checked by the queue
                max_messages=max_messages,
                wait_ms=wait_ms,
                visibility_ms=visibility_ms,
            )
            return [message_to_wire(m) for m in found]
        if op == "describe":
            describe = getattr(self.queue, "describe", None)
            return {} if describe is None else describe()
        raise InvalidArgument(f"unknown data path op {op!r}")


class CallBatcher:
    """Client side: coalesces concurrent calls into ``calls`` frames.

    ``send(calls)`` carries one frame and returns the per-call outcomes. One frame is in
    flight at a time unless a full one (``batch_max`` calls) is waiting, up to
    ``in_flight_max``; calls made meanwhile queue (at most ``queued_max``, then callers wait).
    """

    def __init__(
        self,
        send: Callable[[list[Any]], Awaitable[list[Any]]],
        *,
        batch_max: int = 256,
        in_flight_max: int = 4,
        queued_max: int = 10_000,
    ) -> None:
        if not 1 <= batch_max <= CALLS_PER_BATCH_MAX or in_flight_max < 1:
            raise InvalidArgument(f"batch_max within 1..{CALLS_PER_BATCH_MAX}, in_flight_max >= 1")
        self._send = send
        self._batch_max = batch_max
        self._in_flight_max = in_flight_max
        self._queued_max = queued_max
        self._queue: deque[tuple[list[Any], asyncio.Future[Any]]] = deque()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, call: list[Any]) -> Awaitable[Any]:
        """Run one wire call in the next frame: await the result (or its error).

        With room in the queue the call joins it at once and the awaitable is its future
        (no coroutine of its own); otherwise a coroutine waits for room first.
        """
        if len(self._queue) >= self._queued_max:
            return self._call_when_room(call)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        self._maybe_send()
        return future

    async def _call_when_room(self, call: list[Any]) -> Any:
        while len(self._queue) >= self._queued_max:
            self._room.clear()
            await self._room.wait()
        return await self.call(call)

    def _maybe_send(self) -> None:
        while self._queue and self._in_flight < self._in_flight_max:
            if self._in_flight and len(self._queue) < self._batch_max:
                return  # let calls gather behind the frame in flight
            count = min(len(self._queue), self._batch_max)
            batch = [self._queue.popleft() for _ in range(count)]
            self._room.set()
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._carry(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _carry(self, batch: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
        try:
            await asyncio.sleep(0)  # let the calls of this loop turn join the frame
            while len(batch) < self._batch_max and self._queue:
                batch.append(self._queue.popleft())
            outcomes = await self._send([call for call, _ in batch])
            if not isinstance(outcomes, list) or len(outcomes) != len(batch):
                raise InvalidArgument("the server answered a different number of calls")
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(FailedPrecondition("the queue client was closed"))
            raise
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, list) and len(outcome) == 2 and outcome[0] is True:
                    future.set_result(outcome[1])
                else:
                    wire = outcome[1] if isinstance(outcome, list) and len(outcome) == 2 else None
                    future.set_exception(error_from_wire(wire))
        finally:
            self._in_flight -= 1
            self._maybe_send()

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
