"""A queued message, its states and its receipts: the data ``QueueState`` works on.

A receipt names one delivery, ``"<id>.<receive_count>"``; see ``blocks.queue.state``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from blocks.core.errors import InvalidArgument
from blocks.queue.api import Message

__all__ = ["MessageState", "StoredMessage", "check_label", "parse_receipt", "to_delivery"]


class MessageState(enum.Enum):
    DELAYED = "delayed"
    READY = "ready"
    INFLIGHT = "inflight"


@dataclass(slots=True)
class StoredMessage:
    """A message the queue holds. Mutable, owned by one ``QueueState``."""

    seq: int  # unique within a broker; the message id is its decimal string
    body: bytes
    group: str | None
    priority: int
    sent_ms: int
    available_ms: int  # DELAYED until then
    receive_count: int = 0
    state: MessageState = MessageState.READY
    deadline_ms: int = 0  # meaningful while INFLIGHT


def parse_receipt(receipt: str) -> tuple[int, int]:
    """Split ``"<seq>.<receive_count>"``; ``InvalidArgument`` for anything else."""
    if not isinstance(receipt, str) or len(receipt) > 48:
        raise InvalidArgument("a receipt is a short string such as '17.2'")
    seq_text, dot, count_text = receipt.partition(".")
    if not dot or not seq_text.isdigit() or not count_text.isdigit():
        raise InvalidArgument(f"malformed receipt {receipt!r}")
    return int(seq_text), int(count_text)


def to_delivery(message: StoredMessage) -> Message:
    return Message(
        id=str(message.seq),
        receipt=f"{message.seq}.{message.receive_count}",
        body=message.body,
        receive_count=message.receive_count,
        group=message.group,
        priority=message.priority,
        sent_ms=message.sent_ms,
    )


def check_label(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 128:
        raise InvalidArgument(f"{what} must be a string of at most 128 characters")
    return value
