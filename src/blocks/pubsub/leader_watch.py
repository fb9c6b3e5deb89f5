"""``LeaderWatch``: what a partition's leader knows of its followers over time, and when it
must next look. Pure: no I/O, no clock (every method takes ``now_ms``).

Theory of operation
-------------------
A leader hears from each follower only through its fetches (``fetched``), and learns it caught
up when a fetch reaches the log's end (``caught_up``). Three checks run on that record, all
from the leader's tick (``blocks.pubsub.replica.PartitionReplica``):

* **ISR lag** (``lagging``): an in-sync follower not caught up for longer than ``lag_max_ms``
  leaves the ISR;
* **announcements** (``announce``): a follower that has neither fetched nor been sent
  ``BeginEpoch`` for longer than ``announce_interval_ms`` is sent one (it may not know who
  leads);
* **majority** (``lost_majority``): after two election timeouts of leading, a leader that has
  heard from fewer than a majority (itself included) within one election timeout steps down.

``next_check_ms`` is the earliest time one of them could act given what is known now. A fetch
only moves that time later, so the leader asks for its timer again only after a tick and when
a follower joins the ISR (its lag check may come first); a tick at a time that fetches have
since pushed back finds nothing to do and asks for the new one.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["NEVER_MS", "LeaderWatch", "WatchConfig"]

NEVER_MS = -(10**15)  # "never heard from" / "never announced to"


class WatchConfig(Protocol):
    """What the checks need of the partition's configuration (``ReplicaConfig`` has it)."""

    @property
    def node(self) -> str: ...
    @property
    def others(self) -> tuple[str, ...]: ...
    @property
    def majority(self) -> int: ...
    @property
    def election_timeout_ms(self) -> int: ...
    @property
    def lag_max_ms(self) -> int: ...
    @property
    def announce_interval_ms(self) -> int: ...


@dataclass(slots=True)
class LeaderWatch:
    """One leadership's record of its followers (a new one for every epoch it leads)."""

    since_ms: int  # when this replica became leader
    last_fetch_ms: dict[str, int] = field(default_factory=dict)
    caught_up_ms: dict[str, int] = field(default_factory=dict)  # a fetch reached the log end
    announced_ms: dict[str, int] = field(default_factory=dict)  # BeginEpoch last sent

    def lagging(self, config: WatchConfig, isr: Set[str], now_ms: int) -> list[str]:
        """The ISR members (the leader aside) not caught up for longer than ``lag_max_ms``."""
        return [
            follower
            for follower in isr
            if follower != config.node
            and now_ms - self.caught_up_ms.get(follower, now_ms) > config.lag_max_ms
        ]

    def lost_majority(self, config: WatchConfig, now_ms: int) -> bool:
        """True when, past two election timeouts of leading, fewer than a majority (the leader
        included) have been heard from within one election timeout."""
        heard = 1 + sum(
            1
            for follower in config.others
            if now_ms - self.last_fetch_ms.get(follower, NEVER_MS) <= config.election_timeout_ms
        )
        return heard < config.majority and now_ms - self.since_ms > 2 * config.election_timeout_ms

    def announce(self, config: WatchConfig, now_ms: int) -> list[str]:
        """The followers to send ``BeginEpoch`` now (quiet and unannounced for longer than
        ``announce_interval_ms``), noted as announced."""
        due = []
        for follower in config.others:
            quiet = now_ms - self.last_fetch_ms.get(follower, NEVER_MS)
            since = now_ms - self.announced_ms.get(follower, NEVER_MS)
            if quiet > config.announce_interval_ms and since > config.announce_interval_ms:
                self.announced_ms[follower] = now_ms
                due.append(follower)
        return due

    def next_check_ms(self, config: WatchConfig, isr: Set[str], now_ms: int) -> int:
        """The earliest time at which ``lagging``, ``announce`` or ``lost_majority`` would act
        if nothing else happened; always after ``now_ms``."""
        dues = [
            self.caught_up_ms.get(f, now_ms) + config.lag_max_ms + 1
            for f in isr
            if f != config.node
        ]
        dues.extend(
            max(self.last_fetch_ms.get(f, NEVER_MS), self.announced_ms.get(f, NEVER_MS))
            + config.announce_interval_ms
            + 1
            for f in config.others
        )
        needed = config.majority - 1  # followers that must have been heard from
        if needed > 0:
            heard = sorted(self.last_fetch_ms.get(f, NEVER_MS) for f in config.others)
            unheard_ms = heard[-needed] + config.election_timeout_ms + 1
            leading_ms = self.since_ms + 2 * config.election_timeout_ms + 1
            dues.append(max(unheard_ms, leading_ms))
        return max(min(dues), now_ms + 1)
