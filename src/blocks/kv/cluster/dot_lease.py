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

A node whose data directory was wiped (or lost) restarts under its old name with no mark, and
its peers may still hold dots it issued. So a start's floor is also at least its clock's
``now_ms * COUNTERS_PER_MS``: a life would have to issue more than ``COUNTERS_PER_MS``
counters of one key per millisecond since it started (65 million writes a second) to reach
the floor of a later start, unless the clock went back between the two. The clock only adds
to the floor: with its mark, a node is safe whatever its clock says.

The lease is one mark for the whole node, while counters are per key: a key's counter starts
just above the floor and grows by one per write of that key, so a reservation of
``COUNTERS_PER_RESERVATION`` lasts that many writes of the node's most written key in this
life (and the first write after a start takes one). The store writes the mark
(``ObjectStore.reserve_counters``); this module is the arithmetic, without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks.core.errors import InvalidArgument
from blocks.kv.cluster.versions import COUNTER_MAX

__all__ = ["COUNTERS_PER_MS", "COUNTERS_PER_RESERVATION", "CounterLease"]

COUNTERS_PER_RESERVATION = 1 << 16
"""Counters one durable reservation covers: an fsync per 65,536 writes of the hottest key.
Each restart skips what is left of the last reservation (about a millisecond of the clock
floor)."""
COUNTERS_PER_MS = 1 << 16
"""The clock floor's counters per millisecond: ``now_ms * COUNTERS_PER_MS`` is about 2**57
today and reaches ``COUNTER_MAX`` in the year 6400."""


@dataclass(slots=True)
class CounterLease:
    """``floor < counter <= reserved`` for every counter this life may issue."""

    floor: int = 0
    """Every counter the node issued before this start is at most this."""
    reserved: int = 0
    """The durable mark: counters up to it may be issued without another reservation."""

    @classmethod
    def resumed(cls, durable_mark: int, now_ms: int = 0) -> CounterLease:
        """The lease of a node that starts with ``durable_mark`` in its store at ``now_ms``
        on its clock: its floor is the higher of the mark and the clock floor."""
        if not 0 <= durable_mark <= COUNTER_MAX:
            raise InvalidArgument(f"a counter mark must be in [0, {COUNTER_MAX}]")
        clock_floor = min(max(now_ms, 0) * COUNTERS_PER_MS, COUNTER_MAX // 2)
        floor = max(durable_mark, clock_floor)
        return cls(floor, floor)

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
