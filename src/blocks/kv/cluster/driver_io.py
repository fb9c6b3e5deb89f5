"""The I/O plumbing ``KVNode`` uses: per-peer outboxes, the save step and its failures.

``Outbox`` is a bounded FIFO of encoded peer messages for one peer, drained by one task with
``Transport.send``; a slow or unreachable peer therefore delays only its own messages. On TCP,
a message pushed while nothing waits before it and the connection takes writes is written at
once (``TcpTransport.send_nowait``), without the task's wake-up and its extra loop turn.
Overflow past ``limit`` drops the message and counts ``outbox_dropped`` (peer messages are
best effort: requests time out, hints and anti-entropy resend).

``PeerBatches`` groups the data-path messages one flush sends into one wire message per peer
(``peer_wire.encode_batch``), in order, so a turn's replica requests and acks to a peer cost
one frame and one handler task there instead of one each. A message estimated past
``BATCH_WEIGHT_MAX`` bytes, and every message that is not a data-path one, travels alone.

``held_flush`` saves every key the core marked dirty, in one ``ObjectStore.save`` call, and
clears the marks. The driver calls it before any held effect leaves the node. When the disk
refuses (``StorageError``), ``KVNodeCore.revert_unsaved`` puts those keys back to what the
store holds, so memory never serves a write that was not saved, and ``StorageHealth`` logs one line when
saving starts failing and one when it works again (not one per failed save).

``send_replica_writes`` is the one exception to that rule, for a store whose save waits for
an fsync: a coordinated put's replica requests leave before the save (the driver decides).

``HeldReady`` is the ``Ready`` rule across a loop turn: the messages and replies of every core
step since the last save are held, and ``flush`` saves once (``held_flush``), then sends the
messages (batched per peer) and resolves the replies. When the save is refused, the puts
made in that turn fail with the storage error, gets of the keys put back fail with
``Unavailable`` (``WaitingRequests.fail_unsaved``), the held messages are dropped and counted
(``storage_dropped_sends``), and the other replies go out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from blocks.core.errors import BlocksError, StorageError, StorageFull
from blocks.core.net import TcpTransport
from blocks.core.ready import Ready
from blocks.core.transport import Transport
from blocks.kv.cluster.messages import (
    Fail,
    GetReplica,
    GetReply,
    Handoff,
    HandoffAck,
    KVReady,
    Message,
    PutAck,
    PutReplica,
    Reply,
)
from blocks.kv.cluster.node import KVNodeCore
from blocks.kv.cluster.peer_wire import BATCH_MESSAGES_MAX, encode_batch, encode_peer_message
from blocks.kv.cluster.persist import ObjectStore, StoredRecord
from blocks.kv.cluster.waiting_requests import WaitingRequests

__all__ = [
    "BATCH_WEIGHT_MAX",
    "HeldReady",
    "Outbox",
    "PeerBatches",
    "StorageHealth",
    "held_flush",
    "send_replica_writes",
]

logger = logging.getLogger(__name__)


class Outbox:
    __slots__ = (
        "_counters",
        "_limit",
        "_peer",
        "_queue",
        "_ready",
        "_send_nowait",
        "_sending",
        "_task",
        "_transport",
    )

    def __init__(self, transport: Transport, peer: str, limit: int, counters: Counter[str]) -> None:
        self._transport = transport
        self._peer = peer
        self._limit = limit
        self._counters = counters
        self._queue: deque[list[Any]] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending = False  # the task holds a message it has not yet handed to the socket
        self._send_nowait = transport.send_nowait if isinstance(transport, TcpTransport) else None

    def push(self, message: list[Any]) -> None:
        """Send ``message`` after the ones pushed before: at once (no task, no loop turn) when
        none is waiting and the connection takes writes, else through the queue."""
        if self._send_nowait is not None and not self._queue and not self._sending:
            try:
                if self._send_nowait(self._peer, message):
                    return
            except BlocksError:
                self._counters["send_failures"] += 1
                return
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
                self._sending = True
                try:
                    await self._transport.send(self._peer, message)
                except BlocksError:
                    self._counters["send_failures"] += 1
                finally:
                    self._sending = False

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


def send_replica_writes(
    ready: KVReady, push: Callable[[str, list[Any]], None], counters: Counter[str]
) -> KVReady:
    """Coordinator pipelining: push a coordinated put's replica requests (``PutReplica``
    with a request id) now, ahead of the flush that saves the coordinator's own copy, so the
    replicas' round trip overlaps the local write; return the rest of the step, which waits
    for that flush as usual.

    Safe to send unsaved: a request carries only the new object, whose dot was leased durably
    before it was made (``dot_lease``), so a coordinator that dies before its own save never
    issues that dot again; the client's answer still waits for the local save (the key is
    dirty until then, and a reply is held while anything is dirty) and for W-1 replica acks,
    each sent after that replica's save. A put whose local save is refused fails, as before,
    though its replicas may hold it (as after a ``Timeout``). Each request goes as a wire
    message of its own, not in the flush's batch (``replica_writes_early`` counts them)."""
    held: list[tuple[str, Message]] = []
    for peer, message in ready.messages:
        if type(message) is PutReplica and message.request_id:
            push(peer, encode_peer_message(message))
            counters["replica_writes_early"] += 1
        else:
            held.append((peer, message))
    return Ready(held, replies=ready.replies)


class HeldReady:
    """The messages and replies of the core steps since the last save (module docs)."""

    __slots__ = ("_counters", "_push", "_requests", "_storage", "messages", "replies")

    def __init__(
        self,
        push: Callable[[str, list[Any]], None],
        counters: Counter[str],
        requests: WaitingRequests,
        storage: StorageHealth,
    ) -> None:
        self._push = push
        self._counters = counters
        self._requests = requests
        self._storage = storage
        self.messages: list[tuple[str, Message]] = []
        self.replies: list[Reply | Fail] = []

    def hold(self, ready: KVReady) -> bool:
        """Keep a step's messages and replies until the next ``flush``; whether anything is
        held now."""
        if ready.messages:
            self.messages.extend(ready.messages)
        if ready.replies:
            self.replies.extend(ready.replies)
        return bool(self.messages or self.replies)

    @property
    def empty(self) -> bool:
        """Nothing is held: no step since the last save left a message or a reply."""
        return not self.messages and not self.replies

    def clear(self) -> None:
        """Drop what is held (the node halted)."""
        self.messages.clear()
        self.replies.clear()

    def flush(self, core: KVNodeCore, store: ObjectStore) -> None:
        """Save the dirty keys, then send the held messages (batched per peer) and resolve
        the held replies; on a refused save, see the module docs."""
        made = self._requests.take_unsaved()
        messages, replies = self.messages, self.replies
        self.messages, self.replies = [], []
        try:
            if held_flush(core, store):
                self._storage.saved()
        except StorageError as error:
            self._save_failed(core, error, made, len(messages), replies)
            return
        batches = PeerBatches(self._push, self._counters)
        for peer, message in messages:
            batches.add(peer, message)
        resolve = self._requests.resolve
        for reply in replies:
            resolve(reply)
        batches.send_all()

    def _save_failed(
        self,
        core: KVNodeCore,
        error: StorageError,
        made: set[int],
        dropped: int,
        replies: list[Reply | Fail],
    ) -> None:
        failed_keys = core.revert_unsaved()
        self._storage.failed(error)
        self._requests.fail_unsaved(error, made, failed_keys)
        if dropped:
            self._counters["storage_dropped_sends"] += dropped
        for reply in replies:
            self._requests.resolve(reply)  # a request failed above is done: a no-op


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


BATCH_WEIGHT_MAX = 256 * 1024
"""Estimated bytes (keys and values) one batch of peer messages carries at most; a message
estimated at more travels alone (frames are bounded by the transport's ``frame_bytes_max``)."""


class _Batch:
    """Encoded data-path messages for one peer from one flush, and their estimated bytes."""

    __slots__ = ("messages", "weight")

    def __init__(self) -> None:
        self.messages: list[list[Any]] = []
        self.weight = 0

    def fits(self, weight: int) -> bool:
        return len(self.messages) < BATCH_MESSAGES_MAX and self.weight + weight <= BATCH_WEIGHT_MAX

    def add(self, message: list[Any], weight: int) -> None:
        self.messages.append(message)
        self.weight += weight


def _batch_weight(message: Message) -> int:
    """A data-path message's estimated wire bytes; -1 for one that travels alone (gossip is
    not an effect; anti-entropy messages, and messages over ``BATCH_WEIGHT_MAX``)."""
    if isinstance(message, PutAck):
        return 16
    if isinstance(message, GetReplica | HandoffAck):
        return 32 + len(message.key)
    if isinstance(message, PutReplica | Handoff | GetReply):
        weight = 64 if isinstance(message, GetReply) else 64 + len(message.key)
        obj = message.obj
        if obj is not None:
            for sibling in obj.siblings:
                weight += 64 + len(sibling.value or b"")
            weight += 32 * len(obj.context.entries)
        return weight if weight <= BATCH_WEIGHT_MAX else -1
    return -1


class PeerBatches:
    """One flush's messages to peers, one batch per peer (see the module docs); ``push``
    hands an encoded wire message to the peer's outbox."""

    __slots__ = ("_batches", "_counters", "_push")

    def __init__(self, push: Callable[[str, list[Any]], None], counters: Counter[str]) -> None:
        self._push = push
        self._counters = counters
        self._batches: dict[str, _Batch] = {}

    def add(self, peer: str, message: Message) -> None:
        """Queue ``message`` for ``peer`` behind the ones added before (sent in that order)."""
        weight = _batch_weight(message)
        batch = self._batches.get(peer)
        if batch is not None and (weight < 0 or not batch.fits(weight)):
            self._send(peer, self._batches.pop(peer))  # keep this peer's messages in order
            batch = None
        if weight < 0:
            self._push(peer, encode_peer_message(message))
            return
        if batch is None:
            batch = self._batches[peer] = _Batch()
        batch.add(encode_peer_message(message), weight)

    def send_all(self) -> None:
        """Push every peer's batch."""
        for peer, batch in self._batches.items():
            self._send(peer, batch)
        self._batches.clear()

    def _send(self, peer: str, batch: _Batch) -> None:
        """One wire message for the peer: the lone message as it is, several as a batch."""
        messages = batch.messages
        if len(messages) == 1:
            self._push(peer, messages[0])
        elif messages:
            self._counters["peer_batches"] += 1
            self._counters["peer_batched_messages"] += len(messages)
            self._push(peer, encode_batch(messages))
