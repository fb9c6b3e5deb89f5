"""One work queue as a pure state machine: visibility, receive counts, delays, FIFO groups.

Theory of operation
-------------------
Every message is in one of three states::

    DELAYED --(available_ms reached)--> READY --receive--> INFLIGHT --ack--> (gone)
                                          ^                   |
                                          +--(deadline or nack, receive_count < max)
                                                              |
                                          (receive_count >= max_receives) --> dead letters

Time only enters as the ``now_ms`` argument of each call, and the queue keeps the largest
``now_ms`` it has seen, so a wall clock stepping backwards never un-expires anything. Before
each operation ``advance(now_ms)`` moves due DELAYED messages to READY and expired INFLIGHT
messages back to READY (or out, as dead letters, once they have been received
``max_receives`` times). The same calls with the same arguments give the same results, which
is what lets ``blocks.queue.broker`` rebuild a queue by replaying its command log.

A receipt names one delivery: ``"<id>.<receive_count>"``. Because every receive increments the
count, a receipt stops working the moment the message is delivered again, so two consumers can
never both ack (or extend) the same message. A receipt still works after its visibility
expired if nobody has received the message since: acking late is better than a duplicate.

Ordering. A standard queue delivers the highest ``priority`` first and, within a priority, in
send order (best effort, as in SQS: a message that comes back after a timeout keeps its place).
A FIFO queue orders per message group: only the oldest messages of a group are delivered, and a
group with a message in flight is locked until that message is acked or comes back, so a
group's messages are processed strictly in order. Groups are served by the priority, then
the age, of their oldest message.

Deduplication: a ``dedup_id`` seen within ``dedup_window_ms`` makes a send a no-op that returns
the first message's id. Every table is bounded (``QueueConfig``); beyond the bounds sends are
refused with ``Overloaded`` and the oldest dedup entries are forgotten early (counted).
"""

from __future__ import annotations

import collections
import heapq

from blocks.core.errors import Conflict, InvalidArgument, NotFound, Overloaded
from blocks.queue.api import Message as Delivery
from blocks.queue.config import QueueConfig, check_body, check_ms, check_priority
from blocks.queue.message import (
    MessageState,
    StoredMessage,
    check_label,
    parse_receipt,
    to_delivery,
)

__all__ = ["Delivery", "MessageState", "QueueState", "StoredMessage", "parse_receipt"]


class QueueState:
    """The messages of one queue and the rules above; no I/O, no clock of its own."""

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self._now_ms = 0
        self._messages: dict[int, StoredMessage] = {}
        self._ready: list[tuple[int, int]] = []  # (-priority, seq), lazily invalidated
        self._delayed: list[tuple[int, int]] = []  # (available_ms, seq)
        self._inflight: list[tuple[int, int, int]] = []  # (deadline_ms, seq, receive_count)
        self._groups: dict[str, collections.deque[int]] = {}  # FIFO: unacked seqs in order
        self._group_inflight: collections.Counter[str] = collections.Counter()
        self._dedup: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self.dedup_evictions = 0  # dedup entries forgotten before their window ended

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._messages)

    def get(self, seq: int) -> StoredMessage | None:
        return self._messages.get(seq)

    def messages(self) -> list[StoredMessage]:
        """Every held message, in send order (for snapshots and tests)."""
        return [self._messages[seq] for seq in sorted(self._messages)]

    @property
    def now_ms(self) -> int:
        """The latest time this queue has seen."""
        return self._now_ms

    def dedup_entries(self) -> list[tuple[str, tuple[int, int]]]:
        """``(dedup_id, (seq, expires_ms))`` oldest first (for snapshots)."""
        return list(self._dedup.items())

    def restore(
        self,
        now_ms: int,
        messages: list[StoredMessage],
        dedup: list[tuple[str, tuple[int, int]]],
    ) -> None:
        """Load a snapshot's messages (in send order) into this empty queue."""
        assert not self._messages, "restore into an empty queue only"
        self._now_ms = now_ms
        for message in messages:
            self._messages[message.seq] = message
            group = message.group if self.config.fifo else None
            if group is not None:
                self._groups.setdefault(group, collections.deque()).append(message.seq)
            if message.state is MessageState.DELAYED:
                heapq.heappush(self._delayed, (message.available_ms, message.seq))
            elif message.state is MessageState.INFLIGHT:
                entry = (message.deadline_ms, message.seq, message.receive_count)
                heapq.heappush(self._inflight, entry)
                if group is not None:
                    self._group_inflight[group] += 1
            elif group is None:
                heapq.heappush(self._ready, (-message.priority, message.seq))
        for group in self._groups:
            self._offer_group(group)
        self._dedup = collections.OrderedDict(dedup)

    def counts(self) -> dict[str, int]:
        """How many messages are in each state."""
        result = {state.value: 0 for state in MessageState}
        for message in self._messages.values():
            result[message.state.value] += 1
        return result

    def next_event_ms(self) -> int | None:
        """The earliest time at which ``advance`` would change something, if any."""
        candidates = []
        if self._delayed:
            candidates.append(self._delayed[0][0])
        if self._inflight:
            candidates.append(self._inflight[0][0])
        return min(candidates) if candidates else None

    # -- time ------------------------------------------------------------------------------

    def advance(self, now_ms: int) -> list[StoredMessage]:
        """Apply every timer due at ``now_ms``; return messages that became dead letters."""
        now_ms = self._tick(now_ms)
        while self._delayed and self._delayed[0][0] <= now_ms:
            available_ms, seq = heapq.heappop(self._delayed)
            message = self._messages.get(seq)
            if (
                message is not None
                and message.state is MessageState.DELAYED
                and message.available_ms == available_ms
            ):
                self._make_ready(message)
        dead: list[StoredMessage] = []
        while self._inflight and self._inflight[0][0] <= now_ms:
            deadline_ms, seq, count = heapq.heappop(self._inflight)
            message = self._messages.get(seq)
            if (
                message is not None
                and message.state is MessageState.INFLIGHT
                and message.deadline_ms == deadline_ms
                and message.receive_count == count
            ):
                self._release(message)
                if self._exhausted(message):
                    dead.append(self._remove(message))
                else:
                    self._make_ready(message)
        self._prune_dedup(now_ms)
        return dead

    def _tick(self, now_ms: int) -> int:
        self._now_ms = max(self._now_ms, check_ms(now_ms, "now_ms"))
        return self._now_ms

    # -- commands --------------------------------------------------------------------------

    def send(
        self,
        seq: int,
        body: bytes,
        now_ms: int,
        *,
        delay_ms: int = 0,
        group: str | None = None,
        dedup_id: str | None = None,
        priority: int = 0,
    ) -> tuple[int, bool]:
        """Add a message; return ``(seq, False)``, or ``(first_seq, True)`` for a duplicate.

        Raises ``InvalidArgument`` (body, delay, priority, group or dedup id out of bounds) or
        ``Overloaded`` (the queue holds ``messages_max``) with nothing changed.
        """
        config = self.config
        check_body(body, config.body_bytes_max)
        check_priority(priority)
        delay_ms = check_ms(delay_ms, "delay_ms", config.delay_ms_max)
        group = check_label(group, "group")
        dedup_id = check_label(dedup_id, "dedup_id")
        if config.fifo and group is None:
            group = ""
        now_ms = self._tick(now_ms)
        self._prune_dedup(now_ms)
        if dedup_id is not None and dedup_id in self._dedup:
            return self._dedup[dedup_id][0], True
        if len(self._messages) >= config.messages_max:
            raise Overloaded(
                f"queue {config.name!r} holds its maximum of {config.messages_max} messages",
                retry_after_ms=100,
            )
        message = StoredMessage(
            seq=seq,
            body=bytes(body),
            group=group,
            priority=priority,
            sent_ms=now_ms,
            available_ms=now_ms + delay_ms,
        )
        self._insert(message)
        if dedup_id is not None:
            self._remember(dedup_id, seq, now_ms)
        return seq, False

    def insert_dead(self, message: StoredMessage, now_ms: int) -> None:
        """Take a dead letter from another queue: ready now, receive count reset."""
        now_ms = self._tick(now_ms)
        if len(self._messages) >= self.config.messages_max:
            raise Overloaded(f"dead-letter queue {self.config.name!r} is full")
        group = "" if self.config.fifo and message.group is None else message.group
        moved = StoredMessage(
            seq=message.seq,
            body=message.body,
            group=group,
            priority=message.priority,
            sent_ms=message.sent_ms,
            available_ms=now_ms,
        )
        self._insert(moved)

    def receive(self, now_ms: int, max_messages: int, visibility_ms: int) -> list[Delivery]:
        """Deliver up to ``max_messages`` READY messages, each hidden for ``visibility_ms``.

        Timers fire only in ``advance``: callers advance to ``now_ms`` first (the broker does).
        """
        if not isinstance(max_messages, int) or not 1 <= max_messages <= self.config.receive_max:
            raise InvalidArgument(f"max_messages must be within 1..{self.config.receive_max}")
        visibility_ms = check_ms(visibility_ms, "visibility_ms", self.config.visibility_ms_max)
        now_ms = self._tick(now_ms)
        deliveries: list[Delivery] = []
        while self._ready and len(deliveries) < max_messages:
            _, seq = heapq.heappop(self._ready)
            message = self._messages.get(seq)
            if message is None or not self._deliverable(message):
                continue
            if message.group is not None and self.config.fifo:
                run = self._take_group_run(message.group, max_messages - len(deliveries))
            else:
                run = [message]
            for taken in run:  # marked at once so a stale heap entry cannot take it twice
                deliveries.append(self._hand_out(taken, now_ms + visibility_ms))
        return deliveries

    def _hand_out(self, message: StoredMessage, deadline_ms: int) -> Delivery:
        message.state = MessageState.INFLIGHT
        message.receive_count += 1
        message.deadline_ms = deadline_ms
        heapq.heappush(self._inflight, (deadline_ms, message.seq, message.receive_count))
        if self.config.fifo and message.group is not None:
            self._group_inflight[message.group] += 1
        return to_delivery(message)

    def ack(self, receipt: str, now_ms: int) -> None:
        """Delete the message ``receipt`` names.

        Raises ``NotFound`` (already acked, moved or never sent) or ``Conflict`` (it has been
        received again since this receipt was issued).
        """
        message = self._by_receipt(receipt, now_ms)
        if message.state is MessageState.INFLIGHT:
            self._release(message)
        self._remove(message)

    def nack(self, receipt: str, now_ms: int, delay_ms: int = 0) -> list[StoredMessage]:
        """Give the message back: visible again after ``delay_ms``; returns dead letters."""
        delay_ms = check_ms(delay_ms, "delay_ms", self.config.delay_ms_max)
        message = self._by_receipt(receipt, now_ms)
        if message.state is MessageState.INFLIGHT:
            self._release(message)
        if self._exhausted(message):
            return [self._remove(message)]
        message.available_ms = self._now_ms + delay_ms
        if delay_ms:
            message.state = MessageState.DELAYED
            heapq.heappush(self._delayed, (message.available_ms, message.seq))
        else:
            self._make_ready(message)
        return []

    def extend_visibility(self, receipt: str, now_ms: int, visibility_ms: int) -> int:
        """Hide the still-held message for ``visibility_ms`` from now; return the deadline.

        Raises ``Conflict`` if its visibility already expired (or it was received again).
        """
        visibility_ms = check_ms(visibility_ms, "visibility_ms", self.config.visibility_ms_max)
        message = self._by_receipt(receipt, now_ms)
        if message.state is not MessageState.INFLIGHT:
            raise Conflict(f"message {message.seq} is no longer in flight")
        message.deadline_ms = self._now_ms + visibility_ms
        heapq.heappush(self._inflight, (message.deadline_ms, message.seq, message.receive_count))
        return message.deadline_ms

    # -- helpers ---------------------------------------------------------------------------

    def _by_receipt(self, receipt: str, now_ms: int) -> StoredMessage:
        seq, count = parse_receipt(receipt)
        self._tick(now_ms)
        message = self._messages.get(seq)
        if message is None:
            raise NotFound(f"message {seq} is not in queue {self.config.name!r}")
        if message.receive_count != count:
            raise Conflict(f"receipt {receipt!r} is stale: the message was received again")
        return message

    def _exhausted(self, message: StoredMessage) -> bool:
        limit = self.config.max_receives
        return limit > 0 and message.receive_count >= limit

    def _insert(self, message: StoredMessage) -> None:
        self._messages[message.seq] = message
        if message.group is not None and self.config.fifo:
            self._groups.setdefault(message.group, collections.deque()).append(message.seq)
        if message.available_ms > self._now_ms:
            message.state = MessageState.DELAYED
            heapq.heappush(self._delayed, (message.available_ms, message.seq))
        else:
            self._make_ready(message)

    def _make_ready(self, message: StoredMessage) -> None:
        message.state = MessageState.READY
        if message.group is not None and self.config.fifo:
            self._offer_group(message.group)
        else:
            heapq.heappush(self._ready, (-message.priority, message.seq))
        self._maybe_compact_heaps()

    def _offer_group(self, group: str) -> None:
        """Queue the group's oldest message if the group may deliver now."""
        pending = self._groups.get(group)
        if not pending or self._group_inflight[group]:
            return
        head = self._messages[pending[0]]
        if head.state is MessageState.READY:
            heapq.heappush(self._ready, (-head.priority, head.seq))

    def _deliverable(self, message: StoredMessage) -> bool:
        if message.state is not MessageState.READY:
            return False
        if message.group is None or not self.config.fifo:
            return True
        pending = self._groups[message.group]
        return pending[0] == message.seq and not self._group_inflight[message.group]

    def _take_group_run(self, group: str, limit: int) -> list[StoredMessage]:
        """The READY messages at the head of ``group``, oldest first, up to ``limit``."""
        run: list[StoredMessage] = []
        for seq in self._groups[group]:
            message = self._messages[seq]
            if len(run) >= limit or message.state is not MessageState.READY:
                break
            run.append(message)
        return run

    def _release(self, message: StoredMessage) -> None:
        """Leave INFLIGHT: unlock the message's group once its last delivery returns."""
        assert message.state is MessageState.INFLIGHT
        message.state = MessageState.READY  # callers settle the final state
        if self.config.fifo and message.group is not None:
            self._group_inflight[message.group] -= 1
            if self._group_inflight[message.group] <= 0:
                del self._group_inflight[message.group]

    def _remove(self, message: StoredMessage) -> StoredMessage:
        del self._messages[message.seq]
        group = message.group
        if self.config.fifo and group is not None:
            pending = self._groups[group]
            pending.remove(message.seq)
            if pending:
                self._offer_group(group)
            else:
                del self._groups[group]
        return message

    def _remember(self, dedup_id: str, seq: int, now_ms: int) -> None:
        self._dedup[dedup_id] = (seq, now_ms + self.config.dedup_window_ms)
        while len(self._dedup) > self.config.dedup_entries_max:
            self._dedup.popitem(last=False)
            self.dedup_evictions += 1

    def _prune_dedup(self, now_ms: int) -> None:
        while self._dedup:
            _, (_, expires_ms) = next(iter(self._dedup.items()))
            if expires_ms > now_ms:
                break
            self._dedup.popitem(last=False)

    def _maybe_compact_heaps(self) -> None:
        """Drop stale heap entries once they outnumber live messages (bounds memory)."""
        bound = 4 * len(self._messages) + 64
        if len(self._ready) > bound:
            self._ready = [
                entry
                for entry in self._ready
                if (m := self._messages.get(entry[1])) is not None and self._deliverable(m)
            ]
            heapq.heapify(self._ready)
        if len(self._inflight) > bound:
            self._inflight = [
                entry
                for entry in self._inflight
                if (m := self._messages.get(entry[1])) is not None
                and m.state is MessageState.INFLIGHT
                and m.deadline_ms == entry[0]
            ]
            heapq.heapify(self._inflight)
