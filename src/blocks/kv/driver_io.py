"""The two pieces of I/O plumbing ``KVNode`` uses: per-peer outboxes and the save step.

``Outbox`` is a bounded FIFO of encoded peer messages for one peer, drained by one task with
``Transport.send``; a slow or unreachable peer therefore delays only its own messages.
Overflow past ``limit`` drops the message and counts ``outbox_dropped`` (peer messages are
best effort: requests time out, hints and anti-entropy resend).

``held_flush`` saves every key the core marked dirty, in one ``ObjectStore.save`` call, and
clears the marks. The driver calls it before any held effect leaves the node.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from typing import Any

from blocks.core.errors import BlocksError
from blocks.core.transport import Transport
from blocks.kv.node import KVNodeCore
from blocks.kv.persist import ObjectStore, StoredRecord

__all__ = ["Outbox", "held_flush"]


class Outbox:
    __slots__ = ("_counters", "_limit", "_peer", "_queue", "_ready", "_task", "_transport")

    def __init__(self, transport: Transport, peer: str, limit: int, counters: Counter[str]) -> None:
        self._transport = transport
        self._peer = peer
        self._limit = limit
        self._counters = counters
        self._queue: deque[list[Any]] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def push(self, message: list[Any]) -> None:
        if len(self._queue) >= self._limit:
            self._counters["outbox_dropped"] += 1
            return
        self._queue.append(message)
        self._ready.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                message = self._queue.popleft()
                try:
                    await self._transport.send(self._peer, message)
                except BlocksError:
                    self._counters["send_failures"] += 1

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._queue.clear()


def held_flush(core: KVNodeCore, store: ObjectStore) -> None:
    if not core.dirty:
        return
    records: list[StoredRecord] = [
        (key, core.objects.get(key), core.hint_owners(key)) for key in sorted(core.dirty)
    ]
    store.save(records)
    core.dirty.clear()
