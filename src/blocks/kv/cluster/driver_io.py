"""The I/O plumbing ``KVNode`` uses: per-peer outboxes, the save step and its failures.

``Outbox`` is a bounded FIFO of encoded peer messages for one peer, drained by one task with
``Transport.send``; a slow or unreachable peer therefore delays only its own messages.
Overflow past ``limit`` drops the message and counts ``outbox_dropped`` (peer messages are
best effort: requests time out, hints and anti-entropy resend).

``held_flush`` saves every key the core marked dirty, in one ``ObjectStore.save`` call, and
clears the marks. The driver calls it before any held effect leaves the node. When the disk
refuses (``StorageError``), ``KVNodeCore.revert_unsaved`` puts those keys back to what the
store holds, so memory never serves a write that was not saved, and ``StorageHealth`` logs one line when
saving starts failing and one when it works again (not one per failed save).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from typing import Any

from blocks.core.errors import BlocksError, StorageError, StorageFull
from blocks.core.transport import Transport
from blocks.kv.cluster.node import KVNodeCore
from blocks.kv.cluster.persist import ObjectStore, StoredRecord

__all__ = ["Outbox", "StorageHealth", "held_flush"]

logger = logging.getLogger(__name__)


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


def held_flush(core: KVNodeCore, store: ObjectStore) -> bool:
    """Save the dirty keys; False if there were none. ``StorageError`` leaves them dirty."""
    if not core.dirty:
        return False
    records: list[StoredRecord] = [
        (key, core.objects.get(key), core.hint_owners(key)) for key in sorted(core.dirty)
    ]
    store.save(records)
    core.saved()
    return True


class StorageHealth:
    """Whether the node's store takes writes; one log line per change of that, a count per
    refused save (``storage_errors``)."""

    __slots__ = ("_counters", "_node_id", "error")

    def __init__(self, node_id: str, counters: Counter[str]) -> None:
        self._node_id = node_id
        self._counters = counters
        self.error: StorageError | None = None  # the last refusal, while saving fails

    @property
    def state(self) -> str:
        """``ok``, ``full`` (the disk is full) or ``failed`` (any other disk error)."""
        if self.error is None:
            return "ok"
        return "full" if isinstance(self.error, StorageFull) else "failed"

    def failed(self, error: StorageError) -> None:
        self._counters["storage_errors"] += 1
        before = self.state
        self.error = error
        if self.state != before:
            logger.warning(
                "kv node %s: %s; writes are refused until the disk takes them, reads go on",
                self._node_id,
                error,
            )

    def saved(self) -> None:
        if self.error is not None:
            self.error = None
            logger.warning("kv node %s: storage writable again; writes resumed", self._node_id)
