"""Queue histories: no acknowledged message lost, redelivery only after its visibility timeout.

Record what clients saw: each send (its message id and whether it was acknowledged), each
delivery (which receive returned the message, with that receive's invoke and completion
times), each delete, and each explicit release (a consumer giving a message back early). Drain
the queue at the end and record those deliveries too. ``check_queue_history`` finds:

* **lost**: an acknowledged send that no delivery ever returned;
* **never sent**: a delivered message id no send invoked;
* **early redeliveries**: a message delivered again although the earlier delivery's
  visibility timeout cannot have run out. The server hid the message at some instant during
  the first receive, so it stayed hidden at least until that receive's invoke plus the
  timeout; a second receive that *completed* before then broke the promise. A release or a
  failed delete in between lifts the promise;
* **deliveries after deletion**: a message delivered by a receive invoked after a delete of it
  was acknowledged.

Times are one machine's monotonic nanoseconds (``History``'s clock), so client and server
clocks never need to agree; the checks only flag what is certain.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from blocks.testing.history import Verdict

__all__ = ["Deletion", "Delivery", "QueueCheck", "QueueSend", "Release", "check_queue_history"]


@dataclass(frozen=True, slots=True)
class QueueSend:
    """A send of ``message_id``; ``acknowledged`` when the queue confirmed it."""

    message_id: Hashable
    acknowledged: bool


@dataclass(frozen=True, slots=True)
class Delivery:
    """``message_id`` returned by a receive that ran from ``invoke_ns`` to ``complete_ns``."""

    consumer: str
    message_id: Hashable
    invoke_ns: int
    complete_ns: int


@dataclass(frozen=True, slots=True)
class Release:
    """``message_id`` made visible again early (a nack, a zero visibility change, or a delete
    that failed), by a call invoked at ``invoke_ns``."""

    message_id: Hashable
    invoke_ns: int


@dataclass(frozen=True, slots=True)
class Deletion:
    """An acknowledged delete of ``message_id``, completed at ``complete_ns``."""

    message_id: Hashable
    complete_ns: int


@dataclass(frozen=True, slots=True)
class QueueCheck(Verdict):
    """The verdict; ``valid`` when every list is empty."""

    failures = ("lost", "never_sent", "early_redeliveries", "delivered_after_delete")
    acknowledged: int
    deliveries: int
    lost: tuple[Hashable, ...]
    never_sent: tuple[Hashable, ...]
    early_redeliveries: tuple[tuple[Delivery, Delivery], ...]
    delivered_after_delete: tuple[Delivery, ...]

    def describe(self) -> str:
        return (
            f"acknowledged={self.acknowledged} deliveries={self.deliveries} "
            f"lost={len(self.lost)} never_sent={len(self.never_sent)} "
            f"early_redeliveries={len(self.early_redeliveries)} "
            f"delivered_after_delete={len(self.delivered_after_delete)}"
            + (f" first lost: {list(self.lost[:5])!r}" if self.lost else "")
        )


def check_queue_history(
    sends: Iterable[QueueSend],
    deliveries: Iterable[Delivery],
    *,
    visibility_timeout_ns: int,
    deletions: Iterable[Deletion] = (),
    releases: Iterable[Release] = (),
) -> QueueCheck:
    """Check a queue history; see the module docs for each property."""
    sends = list(sends)
    delivered = sorted(deliveries, key=lambda d: (d.invoke_ns, d.complete_ns))
    invoked = {send.message_id for send in sends}
    seen = {delivery.message_id for delivery in delivered}
    acknowledged = [send.message_id for send in sends if send.acknowledged]
    lost = tuple(message for message in acknowledged if message not in seen)
    never_sent = tuple(sorted({d.message_id for d in delivered} - invoked, key=repr))
    released: dict[Hashable, list[int]] = defaultdict(list)
    for release in releases:
        released[release.message_id].append(release.invoke_ns)
    deleted: dict[Hashable, int] = {}
    for deletion in deletions:
        deleted[deletion.message_id] = min(
            deletion.complete_ns, deleted.get(deletion.message_id, deletion.complete_ns)
        )
    early: list[tuple[Delivery, Delivery]] = []
    after_delete: list[Delivery] = []
    last: dict[Hashable, Delivery] = {}
    for delivery in delivered:
        message = delivery.message_id
        if message in deleted and delivery.invoke_ns > deleted[message]:
            after_delete.append(delivery)
        previous = last.get(message)
        if previous is not None:
            hidden_until = previous.invoke_ns + visibility_timeout_ns
            gave_back = any(
                previous.invoke_ns <= t <= delivery.complete_ns for t in released[message]
            )
            if delivery.complete_ns < hidden_until and not gave_back:
                early.append((previous, delivery))
        last[message] = delivery
    return QueueCheck(
        acknowledged=len(acknowledged),
        deliveries=len(delivered),
        lost=lost,
        never_sent=never_sent,
        early_redeliveries=tuple(early),
        delivered_after_delete=tuple(after_delete),
    )
