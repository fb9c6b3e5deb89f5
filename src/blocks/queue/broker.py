"""Many queues behind one command interface: the pure core a queue server replays from its log.

Theory of operation
-------------------
Every change to the broker is a *command*, a plain msgpack list whose second element is the
time it ran at (``["send", now_ms, queue, body, delay_ms, group, dedup_id, priority]`` ...).
``execute(command)`` first advances every queue to ``now_ms`` (timers fire, dead letters move
to their dead-letter queue, ordered by when they expired), then runs the command and returns
its result. A command that raises changed nothing but the timers, and a later command's
advance does the same, so only commands that succeed need to be logged. Replaying the logged
commands in order therefore rebuilds exactly the same broker: message ids, receive counts,
receipts and invisibility deadlines included. That is the whole durability story of
``blocks.queue.local``: write the command, make it durable, then reply.

Message ids come from one counter per broker, so an id stays unique when a message moves to
a dead-letter queue. ``snapshot()``/``restore()`` capture the whole broker as msgpack-able data,
so the log before a snapshot can be deleted.
"""

from __future__ import annotations

from typing import Any

from blocks.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
)
from blocks.queue.config import QUEUES_MAX, QueueConfig, check_name
from blocks.queue.state import Delivery, MessageState, QueueState, StoredMessage

__all__ = ["QueueBroker"]


class QueueBroker:
    """Queues by name; ``execute`` is the only way state changes."""

    def __init__(self, *, queues_max: int = QUEUES_MAX) -> None:
        self.queues_max = queues_max
        self._queues: dict[str, QueueState] = {}
        self._next_seq = 1
        self._now_ms = 0
        self.discarded = 0  # dead letters with nowhere to go (no or full dead-letter queue)

    # -- reading ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._queues)

    def queue(self, name: str) -> QueueState:
        state = self._queues.get(name)
        if state is None:
            raise NotFound(f"no queue named {name!r}")
        return state

    def next_event_ms(self) -> int | None:
        times = [t for q in self._queues.values() if (t := q.next_event_ms()) is not None]
        return min(times) if times else None

    # -- commands --------------------------------------------------------------------------

    def execute(self, command: Any) -> Any:
        """Advance time to the command's ``now_ms``, then run it; see the module docs."""
        if not isinstance(command, list) or len(command) < 2 or not isinstance(command[0], str):
            raise InvalidArgument("a command is [verb, now_ms, ...]")
        verb, now_ms = command[0], command[1]
        if type(now_ms) is not int or now_ms < 0:
            raise InvalidArgument("now_ms must be a non-negative integer")
        handler = _VERBS.get(verb)
        if handler is None:
            raise InvalidArgument(f"unknown command {verb!r}")
        self.advance(now_ms)
        try:
            return handler(self, *command[2:])
        except TypeError:
            raise InvalidArgument(f"malformed {verb!r} command") from None

    def advance(self, now_ms: int) -> None:
        """Fire timers in every queue; route dead letters in order of expiry."""
        self._now_ms = max(self._now_ms, now_ms)
        dead: list[tuple[int, int, str, StoredMessage]] = []
        for name, state in self._queues.items():
            for message in state.advance(self._now_ms):
                dead.append((message.deadline_ms, message.seq, name, message))
        if not dead:
            return
        dead.sort(key=lambda item: (item[0], item[1]))
        for _, _, name, message in dead:
            self._route_dead(name, message)

    def _route_dead(self, source: str, message: StoredMessage) -> None:
        target = self._queues[source].config.dead_letter
        state = self._queues.get(target) if target is not None else None
        if state is None:
            self.discarded += 1
            return
        try:
            state.insert_dead(message, self._now_ms)
        except Overloaded:
            self.discarded += 1

    def _create(self, config_data: Any) -> QueueConfig:
        config = QueueConfig.from_dict(config_data)
        existing = self._queues.get(config.name)
        if existing is not None:
            if existing.config == config:
                return config  # creating the same queue twice is a no-op
            raise AlreadyExists(f"queue {config.name!r} exists with another configuration")
        if len(self._queues) >= self.queues_max:
            raise FailedPrecondition(f"a broker holds at most {self.queues_max} queues")
        if config.dead_letter is not None and config.dead_letter not in self._queues:
            raise NotFound(f"dead-letter queue {config.dead_letter!r} does not exist")
        self._queues[config.name] = QueueState(config)
        return config

    def _delete(self, name: str) -> None:
        check_name(name)
        self.queue(name)
        users = [q for q, s in self._queues.items() if s.config.dead_letter == name]
        if users:
            raise FailedPrecondition(f"queue {name!r} is the dead-letter queue of {users}")
        del self._queues[name]

    def _send(
        self,
        name: str,
        body: bytes,
        delay_ms: int,
        group: str | None,
        dedup_id: str | None,
        priority: int,
    ) -> list[Any]:
        state = self.queue(name)
        seq, duplicate = state.send(
            self._next_seq,
            body,
            self._now_ms,
            delay_ms=delay_ms,
            group=group,
            dedup_id=dedup_id,
            priority=priority,
        )
        if not duplicate:
            self._next_seq += 1
        return [str(seq), duplicate]

    def _receive(self, name: str, max_messages: int, visibility_ms: int) -> list[Delivery]:
        return self.queue(name).receive(self._now_ms, max_messages, visibility_ms)

    def _ack(self, name: str, receipt: str) -> None:
        self.queue(name).ack(receipt, self._now_ms)

    def _nack(self, name: str, receipt: str, delay_ms: int) -> None:
        for message in self.queue(name).nack(receipt, self._now_ms, delay_ms):
            self._route_dead(name, message)

    def _extend(self, name: str, receipt: str, visibility_ms: int) -> int:
        return self.queue(name).extend_visibility(receipt, self._now_ms, visibility_ms)

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole broker as msgpack-able data (queues in creation order)."""
        return {
            "next_seq": self._next_seq,
            "now_ms": self._now_ms,
            "discarded": self.discarded,
            "queues": [
                {
                    "config": state.config.to_dict(),
                    "now_ms": state.now_ms,
                    "messages": [_message_row(m) for m in state.messages()],
                    "dedup": [[k, s, e] for k, (s, e) in state.dedup_entries()],
                }
                for state in self._queues.values()
            ],
        }

    @classmethod
    def restore(cls, data: Any, *, queues_max: int = QUEUES_MAX) -> QueueBroker:
        """Rebuild a broker from ``snapshot()`` output."""
        broker = cls(queues_max=queues_max)
        broker._next_seq = int(data["next_seq"])
        broker._now_ms = int(data["now_ms"])
        broker.discarded = int(data["discarded"])
        for queue_data in data["queues"]:
            state = QueueState(QueueConfig.from_dict(queue_data["config"]))
            state.restore(
                int(queue_data["now_ms"]),
                [_message_from_row(row) for row in queue_data["messages"]],
                [(k, (s, e)) for k, s, e in queue_data["dedup"]],
            )
            broker._queues[state.config.name] = state
        return broker


def _message_row(message: StoredMessage) -> list[Any]:
    return [
        message.seq,
        message.body,
        message.group,
        message.priority,
        message.sent_ms,
        message.available_ms,
        message.receive_count,
        message.state.value,
        message.deadline_ms,
    ]


def _message_from_row(row: list[Any]) -> StoredMessage:
    seq, body, group, priority, sent_ms, available_ms, count, state, deadline_ms = row
    return StoredMessage(
        seq=seq,
        body=body,
        group=group,
        priority=priority,
        sent_ms=sent_ms,
        available_ms=available_ms,
        receive_count=count,
        state=MessageState(state),
        deadline_ms=deadline_ms,
    )


_VERBS: dict[str, Any] = {
    "create": QueueBroker._create,
    "delete": QueueBroker._delete,
    "send": QueueBroker._send,
    "receive": QueueBroker._receive,
    "ack": QueueBroker._ack,
    "nack": QueueBroker._nack,
    "extend": QueueBroker._extend,
}
