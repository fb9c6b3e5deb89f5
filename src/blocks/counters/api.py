"""The counters interface: named integer counters that many writers increment.

Implementations: ``LocalCounters`` (one process, exact), ``ShardedCounters`` (increments spread
over K shards to avoid one hot cell), and ``GossipReplica`` (a CRDT replica that converges
with its peers). ``contract.CountersContract`` checks any of them against a dict.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["COUNTERS_MAX", "COUNTER_NAME_BYTES_MAX", "Counters"]

COUNTER_NAME_BYTES_MAX = 256
COUNTERS_MAX = 100_000


@runtime_checkable
class Counters(Protocol):
    """Named counters.

    Contract:

    * ``increment(name, amount)`` adds ``amount`` (any int, negative to decrement) and returns
      the counter's value as this replica now sees it. Once it returns, the increment is
      *acknowledged*: it is never lost and is counted exactly once in every replica's value
      after the replicas have exchanged state (immediately, for single-node implementations).
    * ``value(name)`` is 0 for a counter never incremented.
    * Names are non-empty str of at most ``COUNTER_NAME_BYTES_MAX`` UTF-8 bytes; at most
      ``COUNTERS_MAX`` distinct names (``Overloaded`` beyond). Bad input raises
      ``InvalidArgument`` and changes nothing.
    """

    def increment(self, name: str, amount: int = 1) -> int:
        """Add ``amount`` to counter ``name``; returns the local value afterwards."""
        ...

    def value(self, name: str) -> int:
        """The counter's value as this replica sees it now."""
        ...
