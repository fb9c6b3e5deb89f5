"""Dot counters a node may issue, reserved durably ahead of use, so a dot is never reused.

Theory of operation. A dot ``(node, counter)`` must name one write only: replicas that hold
two different values under one dot keep whichever they saw first and never converge. The
counter a coordinator issues for a key comes from its own copy of the key
(``versions.next_counter``); a copy that lost its newest writes to a power cut (under
``sync=never`` nothing is fsynced before the ack) would hand out those dots again.

So a node leases its counters: ``reserved`` is a mark its store made durable (fsynced, power
cut or not) *before* any counter above the previous mark was issued. A restart resumes with
``floor = reserved = the durable mark``; every counter of the new life is above the floor,
hence above every counter of every earlier life, whatever the store kept of their writes.

The lease is one mark for the whole node, while counters are per key: a key's counter starts
just above the floor and grows by one per write of that key, so a reservation of
``COUNTERS_PER_RESERVATION`` lasts that many writes of the node's most written key in this
life (and the first write after a start takes one). The store writes the mark
(``ObjectStore.reserve_counters``); this module is the arithmetic, without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks.core.errors import InvalidArgument
from blocks.kv.versions import COUNTER_MAX

__all__ = ["COUNTERS_PER_RESERVATION", "CounterLease"]

COUNTERS_PER_RESERVATION = 1 << 16
"""Counters one durable reservation covers: an fsync per 65,536 writes of the hottest key.
Each restart skips what is left of the last reservation, so counters grow by up to this
much per start: 2**47 starts before ``COUNTER_MAX``."""


@dataclass(slots=True)
class CounterLease:
    """``floor < counter <= reserved`` for every counter this life may issue."""

    floor: int = 0
    """Every counter the node issued before this start is at most this."""
    reserved: int = 0
    """The durable mark: counters up to it may be issued without another reservation."""

    @classmethod
    def resumed(cls, durable_mark: int) -> CounterLease:
        """The lease of a node that starts with ``durable_mark`` in its store."""
        if not 0 <= durable_mark <= COUNTER_MAX:
            raise InvalidArgument(f"a counter mark must be in [0, {COUNTER_MAX}]")
        return cls(durable_mark, durable_mark)

    def mark_needed(self, counter: int) -> int | None:
        """The mark to make durable before ``counter`` may be issued; None if it may now."""
        assert counter > self.floor, "next_counter keeps counters above the floor"
        if counter <= self.reserved:
            return None
        return min(max(counter, self.reserved) + COUNTERS_PER_RESERVATION, COUNTER_MAX)

    def reserved_to(self, mark: int) -> None:
        """The store made ``mark`` durable."""
        assert mark >= self.reserved, "a reservation never moves the mark back"
        self.reserved = mark
