"""queue workload: senders send unique bodies, consumers receive and ack; the final state is
what was consumed (received and acked) plus a drain of the queue after the nemesis.

Delivery is at least once: a body may be consumed twice (a lost ack, a restart), but an
acknowledged send must be consumed (delivered, then acked or its ack's outcome unknown) or
still queued, and no body may appear that was never
sent. In-flight deliveries whose consumer died come back after their visibility timeout,
which the drain waits out."""

from __future__ import annotations

import asyncio

from blocks.queue.client import QueueClient, connect
from blocks.testing.checkers import (
    Deletion,
    Delivery,
    QueueSend,
    Release,
    check_queue_history,
)
from blocks.testing.history import History, OpType
from blocks.testing.workloads.base import ERROR_BACKOFF_S, Verdict, judge, retrying

__all__ = ["QueueWorkload"]

RECEIVE_BATCH = 10
QUIET_RECEIVES = 3  # empty receives in a row, after the visibility timeout, end the drain
DRAIN_ROUNDS_MAX = 10_000


class QueueWorkload:
    """Build with ``await QueueWorkload.open(address, token, seed)``."""

    def __init__(self, client: QueueClient, queue: str, *, senders: int, visibility_ms: int):
        self.client = client
        self.queue = queue
        self.senders = senders
        self.visibility_ms = visibility_ms
        self.history = History()
        self.consumed: list[bytes] = []
        self.deliveries: list[Delivery] = []
        self.deletions: list[Deletion] = []
        self.releases: list[Release] = []

    @classmethod
    async def open(
        cls,
        address: str,
        token: str,
        seed: int,
        *,
        senders: int = 2,
        visibility_ms: int = 1500,
        op_timeout_s: float = 5.0,
        data_path: bool = True,
    ) -> QueueWorkload:
        """``data_path=False`` keeps every call on gRPC (see the client's ``connect``)."""
        client = await connect(address, token=token, timeout_s=op_timeout_s, data_path=data_path)
        queue = f"nemesis-{seed}"
        await retrying(lambda: client.create_queue(queue))
        return cls(client, queue, senders=senders, visibility_ms=visibility_ms)

    async def run(self, done: asyncio.Event) -> None:
        senders = (self._sender(n, done) for n in range(self.senders))
        await asyncio.gather(*senders, self._consumer(done))

    async def _sender(self, number: int, done: asyncio.Event) -> None:
        sequence = 0
        while not done.is_set():
            body = f"{self.queue}-s{number}-{sequence}".encode()
            sequence += 1
            send = self.client.send(self.queue, body)
            if await self.history.call(number, "write", None, body, send) is None:
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def _consumer(self, done: asyncio.Event) -> None:
        while not done.is_set():
            await self._receive_and_ack(self.senders)

    async def _receive_and_ack(self, client: int) -> int:
        """One receive (recorded as a ``read`` of the bodies) and an ack of each delivery;
        returns how many were delivered."""
        invoked = self.history.add(client, OpType.INVOKE, "read", self.queue)
        try:
            messages = await self.client.receive(
                self.queue, max_messages=RECEIVE_BATCH, visibility_ms=self.visibility_ms
            )
        except Exception as error:  # unknown outcome: deliveries come back after visibility
            self.history.add(client, OpType.INFO, "read", self.queue, None, repr(error))
            await asyncio.sleep(ERROR_BACKOFF_S)
            return 0
        bodies = tuple(message.body for message in messages)
        completed = self.history.add(client, OpType.OK, "read", self.queue, bodies)
        for body in bodies:
            self.deliveries.append(Delivery(str(client), body, invoked.time_ns, completed.time_ns))
        for message in messages:
            ack = self.history.add(client, OpType.INVOKE, "ack", message.id, message.body)
            try:
                await self.client.ack(self.queue, message.receipt)
            except Exception as error:  # unknown: deleted, or to be delivered again
                self.history.add(client, OpType.INFO, "ack", message.id, None, repr(error))
                self.releases.append(Release(message.body, ack.time_ns))
                self.consumed.append(message.body)  # delivered, whichever it was
                continue
            done = self.history.add(client, OpType.OK, "ack", message.id, message.body)
            self.deletions.append(Deletion(message.body, done.time_ns))
            self.consumed.append(message.body)
        return len(messages)

    async def verify(self) -> Verdict:
        await asyncio.sleep(self.visibility_ms / 1000)  # unacked deliveries become visible
        quiet = 0
        for _ in range(DRAIN_ROUNDS_MAX):
            if quiet >= QUIET_RECEIVES:
                break
            count = await self._receive_and_ack(self.senders + 1)
            quiet = 0 if count else quiet + 1
            if not count:
                await asyncio.sleep(self.visibility_ms / 1000 / QUIET_RECEIVES)
        sends = [
            QueueSend(op.value, op.type is OpType.OK)
            for op in self.history.ops
            if op.function == "write" and op.type is not OpType.INVOKE
        ]
        check = check_queue_history(
            sends,
            self.deliveries,
            visibility_timeout_ns=self.visibility_ms * 1_000_000,
            deletions=self.deletions,
            releases=self.releases,
        )
        problems = [] if check.valid else [f"queue checker: {check.describe()}"]
        return judge(self.history, list(self.consumed), problems)

    async def close(self) -> None:
        await self.client.close()
