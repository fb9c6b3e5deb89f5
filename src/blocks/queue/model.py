"""A deliberately naive queue model for the contract: lists and brute force, no heaps.

Theory of operation: the model keeps every message with its visibility deadline (None when
not in flight) and recomputes everything by scanning on each call, so it is easy to check by
reading. ``blocks.queue.contract`` drives it next to a real implementation and compares every
answer. Message ids are the model's own send counter; the contract maps real ids onto them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blocks.core.errors import Conflict, NotFound

__all__ = ["ModelMessage", "ModelQueue", "QueueModel"]


@dataclass(slots=True)
class ModelMessage:
    id: int
    body: bytes
    priority: int
    group: str | None
    available_ms: int
    count: int = 0
    deadline_ms: int | None = None  # set while in flight


@dataclass(slots=True)
class ModelQueue:
    name: str
    visibility_ms: int
    max_receives: int
    dead_letter: str | None
    fifo: bool
    dedup_window_ms: int
    messages: dict[int, ModelMessage] = field(default_factory=dict)
    dedup: dict[str, tuple[int, int]] = field(default_factory=dict)


class QueueModel:
    """Queues by name, with the semantics stated in ``blocks.queue.api``."""

    def __init__(self) -> None:
        self.now_ms = 0
        self.queues: dict[str, ModelQueue] = {}
        self.next_id = 1

    def advance(self, now_ms: int) -> None:
        self.now_ms = max(self.now_ms, now_ms)
        dead: list[tuple[int, int, str]] = []
        for queue in self.queues.values():
            for message in queue.messages.values():
                if message.deadline_ms is not None and message.deadline_ms <= self.now_ms:
                    if queue.max_receives and message.count >= queue.max_receives:
                        dead.append((message.deadline_ms, message.id, queue.name))
                    message.deadline_ms = None
        for _, message_id, name in sorted(dead):
            self._move_dead(self.queues[name], message_id)

    def _move_dead(self, queue: ModelQueue, message_id: int) -> None:
        message = queue.messages.pop(message_id)
        target = self.queues.get(queue.dead_letter) if queue.dead_letter else None
        if target is not None:
            group = "" if target.fifo and message.group is None else message.group
            target.messages[message.id] = ModelMessage(
                message.id, message.body, message.priority, group, self.now_ms
            )

    def send(
        self,
        name: str,
        body: bytes,
        delay_ms: int,
        group: str | None,
        dedup_id: str | None,
        priority: int,
    ) -> int:
        queue = self._queue(name)
        queue.dedup = {k: v for k, v in queue.dedup.items() if v[1] > self.now_ms}
        if dedup_id is not None and dedup_id in queue.dedup:
            return queue.dedup[dedup_id][0]
        if queue.fifo and group is None:
            group = ""
        message = ModelMessage(self.next_id, body, priority, group, self.now_ms + delay_ms)
        queue.messages[message.id] = message
        self.next_id += 1
        if dedup_id is not None:
            queue.dedup[dedup_id] = (message.id, self.now_ms + queue.dedup_window_ms)
        return message.id

    def _visible(self, message: ModelMessage) -> bool:
        return message.deadline_ms is None and message.available_ms <= self.now_ms

    def receive(self, name: str, max_messages: int, visibility_ms: int) -> list[ModelMessage]:
        queue = self._queue(name)
        if queue.fifo:
            taken = self._fifo_candidates(queue, max_messages)
        else:
            ready = [m for m in queue.messages.values() if self._visible(m)]
            taken = sorted(ready, key=lambda m: (-m.priority, m.id))[:max_messages]
        for message in taken:
            message.count += 1
            message.deadline_ms = self.now_ms + visibility_ms
        return taken

    def _fifo_candidates(self, queue: ModelQueue, max_messages: int) -> list[ModelMessage]:
        groups: dict[str | None, list[ModelMessage]] = {}
        for message in sorted(queue.messages.values(), key=lambda m: m.id):
            groups.setdefault(message.group, []).append(message)
        runs = []
        for members in groups.values():
            if any(m.deadline_ms is not None for m in members):
                continue  # a group with a message in flight is locked
            run = []
            for message in members:
                if not self._visible(message):
                    break
                run.append(message)
            if run:
                runs.append(run)
        runs.sort(key=lambda run: (-run[0].priority, run[0].id))
        taken: list[ModelMessage] = []
        for run in runs:
            taken.extend(run[: max_messages - len(taken)])
            if len(taken) >= max_messages:
                break
        return taken

    def _held(self, name: str, message_id: int, count: int) -> ModelMessage:
        message = self._queue(name).messages.get(message_id)
        if message is None:
            raise NotFound(str(message_id))
        if message.count != count:
            raise Conflict(str(message_id))
        return message

    def ack(self, name: str, message_id: int, count: int) -> None:
        self._held(name, message_id, count)
        del self._queue(name).messages[message_id]

    def nack(self, name: str, message_id: int, count: int, delay_ms: int) -> None:
        queue = self._queue(name)
        message = self._held(name, message_id, count)
        message.deadline_ms = None
        if queue.max_receives and message.count >= queue.max_receives:
            self._move_dead(queue, message_id)
        else:
            message.available_ms = self.now_ms + delay_ms

    def extend(self, name: str, message_id: int, count: int, visibility_ms: int) -> None:
        message = self._held(name, message_id, count)
        if message.deadline_ms is None:
            raise Conflict(str(message_id))
        message.deadline_ms = self.now_ms + visibility_ms

    def _queue(self, name: str) -> ModelQueue:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(name)
        return queue
