"""The sequencer's interfaces: what an ID generator and a worker lease promise.

An ``IdGenerator`` hands out IDs that are unique and strictly increasing *per generator*;
across generators, uniqueness comes from distinct worker ids (Snowflake), random bits
(UUIDv7, ULID) or a shared durable counter (``TicketServer``). ``contract.SequencerContract``
checks any implementation against these promises with a clock that jumps both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar, runtime_checkable

__all__ = ["IdGenerator", "LeaseCheck"]

IdT_co = TypeVar("IdT_co", covariant=True)


@runtime_checkable
class IdGenerator(Protocol[IdT_co]):
    """A source of unique, ordered IDs.

    Contract:

    * Every ID returned by ``next_id`` or ``next_ids`` is strictly greater than every ID the
      same generator returned before, whatever the wall clock does: a generator waits for a
      clock that moved back a little and raises ``Unavailable`` for one that moved back a lot,
      but never returns an equal or smaller ID. After ``Unavailable`` it keeps working once
      the clock has caught up.
    * ``next_ids(n)`` returns exactly ``n`` IDs in increasing order, or raises; ``n`` is
      bounded (``InvalidArgument`` above the bound or below 0).
    * A generator is owned by one thread at a time.
    """

    def next_id(self) -> IdT_co:
        """Return one new ID."""
        ...

    def next_ids(self, n: int) -> Sequence[IdT_co]:
        """Return ``n`` new IDs in increasing order."""
        ...


@runtime_checkable
class LeaseCheck(Protocol):
    """Something that knows whether its holder may still act (a worker-id lease)."""

    def held(self) -> bool:
        """True while the lease is certainly still ours; False once it may have expired."""
        ...
