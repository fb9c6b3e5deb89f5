"""The ``acks=all`` produces a partition leader holds until the high watermark passes them.

Theory of operation. A leader that stored a produce's records asks for a waiter
(``CommitWaiters.waiter``): a future for "the high watermark reached ``end`` in leader epoch
``epoch``". After every core step the driver calls ``resolve`` with the partition's replica:
a waiter whose end the high watermark passed succeeds; one whose epoch ended (the replica no
longer leads, or leads a later epoch) fails with ``Unavailable``, since this leader can no
longer tell whether its records commit. They may still commit under the next leader: the
producer retries under its sequence number and gets the original offset. Waiters have no
timeout of their own (``Replication.wait_committed`` adds one). Bound: ``WAITERS_MAX``
waiters per partition; past it, ``Overloaded`` at once.

No I/O; one asyncio loop.
"""

from __future__ import annotations

import asyncio

from blocks.core.errors import BlocksError, Overloaded, Unavailable
from blocks.pubsub.replica import PartitionReplica, Role

__all__ = ["WAITERS_MAX", "CommitWaiters"]

WAITERS_MAX = 10_000
Key = tuple[str, int]


class CommitWaiters:
    """Every partition's commit waiters on one broker, as ``(end, epoch, future)``."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[Key, list[tuple[int, int, asyncio.Future[None]]]] = {}

    def waiter(
        self, key: Key, replica: PartitionReplica, end: int, epoch: int
    ) -> asyncio.Future[None]:
        """A future resolved once ``replica``'s high watermark reaches ``end`` in leader epoch
        ``epoch`` (failed with ``Unavailable`` when that epoch ends first). Raises
        ``Unavailable`` when ``replica`` does not lead ``epoch`` now, ``Overloaded`` past
        ``WAITERS_MAX``."""
        if replica.role is not Role.LEADER or replica.epoch != epoch:
            raise Unavailable("the partition's leader changed; retry")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if replica.hw >= end:
            future.set_result(None)
            return future
        waiting = self._waiting.setdefault(key, [])
        if len(waiting) >= WAITERS_MAX:
            raise Overloaded("too many produces waiting for replication", retry_after_ms=50)
        waiting.append((end, epoch, future))
        return future

    def resolve(self, key: Key, replica: PartitionReplica) -> None:
        """Settle the waiters of ``key`` that the replica's state decides (see the module
        docs); keep the others. Waiters already done (cancelled) are dropped."""
        waiting = self._waiting.get(key)
        if not waiting:
            return
        kept = []
        for end, epoch, future in waiting:
            if future.done():
                continue
            if replica.role is not Role.LEADER or replica.epoch != epoch:
                future.set_exception(Unavailable("the partition's leader changed; retry"))
            elif replica.hw >= end:
                future.set_result(None)
            else:
                kept.append((end, epoch, future))
        self._waiting[key] = kept

    def fail_all(self, error: BlocksError) -> None:
        """Fail every waiter still pending with ``error`` and forget them all."""
        for waiting in self._waiting.values():
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(error)
        self._waiting.clear()
