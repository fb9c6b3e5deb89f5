"""``DataNode``: a client of one cache node's TCP data path that batches by loop turn.

Theory of operation
-------------------
A ``DataNode`` holds one client-only ``TcpTransport`` with one connection to its node. A call
(``get``, ``put``, ``delete``, ``get_many``) does not write a frame: it queues itself and
awaits a future. The first call queued in a turn of the event loop schedules a flush at the
end of that turn (``call_soon``); the flush sends the queue as ``OP_BATCH`` requests of at
most ``BATCH_CALLS_MAX`` calls and ``BATCH_BYTES_MAX`` bytes of values each, pipelined on the
connection, and resolves every caller's future from the batch's reply, in order. A lone
call therefore waits no timer, only the end of the turn it was made in; sixteen callers in
flight share one frame each way.

Failures are the library's errors: a batch that fails as a whole (``Unavailable`` when the
node cannot be reached or the connection breaks, ``Timeout`` past ``timeout_s``) fails every
call in it; a call's own error (``InvalidArgument``, ``StaleView`` arriving as its class
``FailedPrecondition``) fails that call only. Calls the node answers ``BATCH_RESEND`` (their
reply did not fit the frame) go out again in the next flush. Closing the client fails what
is queued or in flight with ``Unavailable``: to the cluster client that is a node gone.

Backpressure. At most ``QUEUE_CALLS_MAX`` calls wait for a batch. A call made while the queue
is full waits for room, first come first served, up to ``timeout_s``; past that it fails
with ``Overloaded`` (the client's own queue is full: the node is not at fault, and the
cluster client does not mark it down for it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from blocks.cache.datapath import (
    BATCH_CALLS_MAX,
    BATCH_ERROR,
    BATCH_OK,
    BATCH_RESEND,
    CLIENT_NAME,
    DATA_FRAME_BYTES_MAX,
    FRAME_SLACK_BYTES,
    OP_BATCH,
    OP_DELETE,
    OP_GET,
    OP_GET_MANY,
    OP_PUT,
    data_limits,
    parse_address,
)
from blocks.core.errors import (
    BlocksError,
    Cancelled,
    InvalidArgument,
    Overloaded,
    PeerError,
    Unavailable,
)
from blocks.core.net import TcpTransport
from blocks.core.transport import error_from_wire

__all__ = ["BATCHES_IN_FLIGHT_MAX", "BATCH_BYTES_MAX", "QUEUE_CALLS_MAX", "DataNode"]

BATCH_BYTES_MAX = 1024 * 1024
"""A batch is cut when the values it carries reach this (a put of a larger value goes alone)."""

BATCHES_IN_FLIGHT_MAX = 1
"""Batches sent and not yet answered, per node. One makes the batches self-clocking: what
callers ask while a batch is out leaves together when its reply is in."""
QUEUE_CALLS_MAX = 4096
"""Calls waiting for a batch, per node; past it a call waits for room (up to the client's
``timeout_s``, then ``Overloaded``)."""

_Call = tuple[list[Any], "asyncio.Future[Any]"]


class DataNode:
    """A client of one node's data path; see the module docstring.

    The same call signatures as ``CacheClient`` for ``get``, ``put`` and ``delete`` (values
    are bytes, ``view_id`` as there), plus ``get_many``.
    """

    def __init__(
        self,
        name: str,
        address: str,
        *,
        token: str | None = None,
        timeout_s: float = 1.0,
        frame_bytes_max: int = DATA_FRAME_BYTES_MAX,
        batches_in_flight_max: int = BATCHES_IN_FLIGHT_MAX,
    ) -> None:
        self.name = name
        self.address = address
        self._timeout_s = timeout_s
        self._batch_bytes_max = min(BATCH_BYTES_MAX, frame_bytes_max - FRAME_SLACK_BYTES)
        if batches_in_flight_max < 1:
            raise InvalidArgument("batches_in_flight_max must be >= 1")
        self._batches_max = batches_in_flight_max
        self._closed = False
        self._queue: list[_Call] = []  # calls not yet sent, in the order they were made
        self._flush_scheduled = False
        self._in_flight = 0  # batches sent and not yet answered (<= batches_in_flight_max)
        self._batches: set[asyncio.Task[None]] = set()
        # callers waiting for room in a full queue, in arrival order (True: room for you;
        # False: the client closed); _promised: those woken and not yet queued
        self._room_waiters: deque[asyncio.Future[bool]] = deque()
        self._promised = 0
        self._transport = TcpTransport(
            CLIENT_NAME,
            listen=None,
            peers={name: parse_address(address)},
            token=token,
            limits=data_limits(frame_bytes_max=frame_bytes_max),
        )
        self.batches_sent = 0

    async def get(self, key: str, *, view_id: int = 0) -> bytes | None:
        value: bytes | None = await self.call([OP_GET, view_id, key])
        return value

    async def put(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        weight: int = 1,
        *,
        view_id: int = 0,
    ) -> None:
        await self.call([OP_PUT, view_id, key, value, ttl or 0.0, weight])

    async def delete(self, key: str, *, view_id: int = 0) -> bool:
        return bool(await self.call([OP_DELETE, view_id, key]))

    async def get_many(self, keys: list[str], *, view_id: int = 0) -> list[bytes | None]:
        values: list[bytes | None] = await self.call([OP_GET_MANY, view_id, list(keys)])
        return values

    async def call(self, message: list[Any]) -> Any:
        """Queue one data call (``[op, view_id, ...]``, see ``blocks.cache.datapath``) for
        the next batch and return its reply. While ``QUEUE_CALLS_MAX`` calls are already
        waiting it waits for room (``Overloaded`` after ``timeout_s``)."""
        if self._closed:
            raise Unavailable(f"the client of node {self.name!r} is closed")
        if self._room_waiters or len(self._queue) + self._promised >= QUEUE_CALLS_MAX:
            await self._wait_for_room()
            if self._closed:
                raise Unavailable(f"the client of node {self.name!r} closed during the call")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((message, future))
        self._maybe_flush_soon()
        return await future

    async def _wait_for_room(self) -> None:
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._room_waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._timeout_s)
        except (TimeoutError, asyncio.CancelledError) as error:
            answered = waiter.done()
            if answered and isinstance(error, TimeoutError):
                pass  # the answer came as the wait ran out: take it (below)
            else:
                if answered and waiter.result():  # cancelled after being given room: pass it on
                    self._promised -= 1
                waiter.cancel()  # still queued: _wake_room_waiters skips it
                self._wake_room_waiters()
                if isinstance(error, asyncio.CancelledError):
                    raise
                raise Overloaded(
                    f"the call queue for node {self.name!r} stayed full "
                    f"({QUEUE_CALLS_MAX} calls) for {self._timeout_s}s; the node is up, "
                    "retry later or send fewer calls at once",
                    retry_after_ms=10,
                ) from None
        if not waiter.result():
            raise Unavailable(f"the client of node {self.name!r} closed during the call")
        self._promised -= 1

    def _wake_room_waiters(self) -> None:
        """Give the room the queue has to the oldest waiting callers."""
        waiters = self._room_waiters
        while waiters and len(self._queue) + self._promised < QUEUE_CALLS_MAX:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                self._promised += 1

    def _maybe_flush_soon(self) -> None:
        """Flush at the end of this turn, if there is something to send and room for it."""
        if self._queue and not self._flush_scheduled and self._in_flight < self._batches_max:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._queue and self._in_flight < self._batches_max and not self._closed:
            count, batch_bytes = 0, 0
            for message, _ in self._queue[:BATCH_CALLS_MAX]:
                size = _value_bytes(message)
                if count and batch_bytes + size > self._batch_bytes_max:
                    break
                count += 1
                batch_bytes += size
            batch, self._queue = self._queue[:count], self._queue[count:]
            self._in_flight += 1
            self.batches_sent += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        self._wake_room_waiters()

    async def _run(self, batch: list[_Call]) -> None:
        try:
            await self._exchange(batch)
        finally:
            self._in_flight -= 1
            self._maybe_flush_soon()  # after the callers woken by this reply queue again

    async def _exchange(self, batch: list[_Call]) -> None:
        request = [OP_BATCH, 0, [message for message, _ in batch]]
        try:
            results = await self._transport.request(self.name, request, self._timeout_s)
            if type(results) is not list or len(results) != len(batch):
                raise PeerError(f"node {self.name!r} answered a batch of {len(batch)} wrongly")
        except Cancelled:  # closed under the batch (the node left the view)
            _fail(batch, Unavailable(f"the client of node {self.name!r} closed during the call"))
            return
        except BlocksError as error:
            _fail(batch, error)
            return
        resend = []
        for (message, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller gave up
            kind = result[0] if type(result) is list and result else None
            if kind == BATCH_OK and len(result) == 2:
                future.set_result(result[1])
            elif kind == BATCH_ERROR and len(result) == 2:
                future.set_exception(error_from_wire(result[1]))
            elif kind == BATCH_RESEND:
                resend.append((message, future))
            else:
                future.set_exception(PeerError(f"malformed batch result from {self.name!r}"))
        self._queue[:0] = resend

    def stats(self) -> dict[str, int]:
        """The client transport's counters (``dials``, ``dial_failures``, ...) and
        ``batches_sent``."""
        return {**self._transport.stats(), "batches_sent": self.batches_sent}

    async def close(self) -> None:
        """Close the connection; queued and in-flight calls fail with ``Unavailable``."""
        self._closed = True
        _fail(self._queue, Unavailable(f"the client of node {self.name!r} is closed"))
        self._queue = []
        while self._room_waiters:
            waiter = self._room_waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)
        await self._transport.close()


def _value_bytes(message: list[Any]) -> int:
    if message and message[0] == OP_PUT and len(message) > 3 and isinstance(message[3], bytes):
        return len(message[3])
    return 0


def _fail(batch: list[_Call], error: BlocksError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
