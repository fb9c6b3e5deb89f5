"""The queue interface: what every queue implementation (local, gRPC client) promises.

Delivery is at-least-once. A message is handed to one consumer at a time: while it is in
flight (received and not yet acked, nacked or expired) nobody else receives it. If the
consumer does not ack within the visibility timeout, the message becomes visible again and is
delivered again with ``receive_count`` one higher; after ``max_receives`` deliveries it moves
to the dead-letter queue instead. A crash of a durable broker loses no send that was
acknowledged (``send`` returned), and every message not acked is delivered again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Message", "Queue"]


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery of a message.

    ``receipt`` names this delivery only: once the message is received again, acking or
    extending with an older receipt raises ``Conflict``.
    """

    id: str
    receipt: str
    body: bytes
    receive_count: int
    group: str | None = None
    priority: int = 0
    sent_ms: int = 0


@runtime_checkable
class Queue(Protocol):
    """A set of named work queues."""

    async def create_queue(
        self,
        name: str,
        *,
        visibility_ms: int = 30_000,
        max_receives: int = 0,
        dead_letter: str | None = None,
        fifo: bool = False,
        dedup_window_ms: int = 300_000,
    ) -> None:
        """Create a queue; the same call again is a no-op.

        Raises ``AlreadyExists`` if the name exists with other settings, ``NotFound`` if
        ``dead_letter`` names no queue, ``InvalidArgument`` for bad settings.
        """
        ...

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and its messages (``NotFound``, ``FailedPrecondition`` when it is
        another queue's dead-letter queue)."""
        ...

    async def send(
        self,
        name: str,
        body: bytes,
        *,
        delay_ms: int = 0,
        group: str | None = None,
        dedup_id: str | None = None,
        priority: int = 0,
    ) -> str:
        """Add a message; return its id once the send is durable.

        ``delay_ms`` hides it until then; ``group`` orders it within its group on FIFO
        queues; a ``dedup_id`` already sent within the queue's dedup window returns the first
        message's id and adds nothing; higher ``priority`` (0..255) is delivered first.
        Raises ``NotFound`` (no such queue), ``InvalidArgument`` (body too large, bad
        arguments) or ``Overloaded`` (queue full).
        """
        ...

    async def receive(
        self,
        name: str,
        *,
        max_messages: int = 1,
        wait_ms: int = 0,
        visibility_ms: int | None = None,
    ) -> list[Message]:
        """Take up to ``max_messages`` visible messages, hiding each for ``visibility_ms``
        (the queue's default when None). With ``wait_ms`` > 0 and nothing visible, wait up to
        that long and return as soon as a message arrives (long polling)."""
        ...

    async def ack(self, name: str, receipt: str) -> None:
        """Delete the delivered message (``NotFound`` if gone, ``Conflict`` if the receipt is
        stale because the message was received again)."""
        ...

    async def nack(self, name: str, receipt: str, *, delay_ms: int = 0) -> None:
        """Return the message now (or after ``delay_ms``); counts towards ``max_receives``."""
        ...

    async def extend_visibility(self, name: str, receipt: str, visibility_ms: int) -> None:
        """Keep the message hidden ``visibility_ms`` from now (``Conflict`` once expired)."""
        ...

    async def close(self) -> None:
        """Release resources; idempotent."""
        ...
