"""``Ready``: what a pure core hands its driver after one step, as data.

Theory of operation
-------------------
A core (a replica, a coordinator, a gossip state) takes one input at a time (a command, a
peer message, the passage of time) and changes its own state. What must then happen in the
world it cannot do itself: it opens no file and no socket. So every step returns a
``Ready``, after etcd raft's ``Ready``: the records to make durable, the messages to send,
the replies to the callers waiting on it, and the timers to set. The driver carries it out,
always in the same order:

1. **persist** every record in ``records``, in order, and wait until they are durable (a vote
   given, an epoch adopted: a message that rests on them must not leave before they would
   survive a crash);
2. **send** every ``(destination, message)`` in ``messages``, in order per destination;
3. **answer** every reply in ``replies``, in order;
4. **arm** every ``(name, due_ms)`` in ``timers``: call the core back at ``due_ms`` on the
   clock the core was given (a later timer of the same name replaces an earlier one).

If persisting fails, nothing else of that ``Ready`` may leave: the driver drops its messages
(every protocol here tolerates loss) and fails or retries its replies as the block documents.

Each core chooses its types: ``Ready[MessageT, ReplyT, RecordT]``. A core whose durability is
batched across many steps (kv saves every key it touched in one write per loop turn) may keep
the dirty set itself instead of listing records, as raft keeps unstable entries until
``Advance``; the ordering rule is the same: save, then send and answer.

Ownership: the sequences are handed to the driver. A core may build them as lists and give
them away (no copy on the hot path); neither side changes them afterwards. ``NOTHING`` is the
shared empty ``Ready`` (no allocation for a step with nothing to do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["NOTHING", "Ready"]

MessageT = TypeVar("MessageT")
ReplyT = TypeVar("ReplyT")
RecordT = TypeVar("RecordT")


@dataclass(frozen=True, slots=True)
class Ready(Generic[MessageT, ReplyT, RecordT]):
    """One step's effects; carry them out in field order (see the module docs)."""

    # (destination, message), sent only after every record below is durable.
    messages: Sequence[tuple[str, MessageT]] = ()
    # What to make durable first (a core's hard state, log records), in order.
    records: Sequence[RecordT] = ()
    # Answers to the callers of the core (by the core's own request ids or in call order).
    replies: Sequence[ReplyT] = ()
    # (name, due_ms): call the core back then, on the core's clock.
    timers: Sequence[tuple[str, int]] = ()

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to carry out."""
        return not (self.messages or self.records or self.replies or self.timers)

    def then(self, later: Ready[MessageT, ReplyT, RecordT]) -> Ready[MessageT, ReplyT, RecordT]:
        """This step followed by ``later``, as one ``Ready``: each field is this one's items,
        then ``later``'s. Every record of both is persisted before any message of either
        leaves (a message may wait longer than it had to, never less)."""
        if later.is_empty:
            return self
        if self.is_empty:
            return later
        return Ready(
            [*self.messages, *later.messages],
            [*self.records, *later.records],
            [*self.replies, *later.replies],
            [*self.timers, *later.timers],
        )


NOTHING: Ready[Any, Any, Any] = Ready()
"""The empty ``Ready`` every core returns when a step has no effect."""
