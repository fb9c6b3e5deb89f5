"""``ReplicationConfig`` and placement: which brokers hold a partition, and the timing of
their replication (the same on every broker of a cluster)."""

from __future__ import annotations

from dataclasses import dataclass

from blocks.core.errors import InvalidArgument
from blocks.core.hashing import rendezvous

__all__ = ["ReplicationConfig", "replica_set"]


def replica_set(topic: str, partition: int, nodes: list[str], factor: int) -> tuple[str, ...]:
    """The brokers holding a partition, preferred leader first."""
    return tuple(rendezvous(f"{topic}/{partition}", sorted(nodes), min(factor, len(nodes))))


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """Timing and placement of a cluster's replication (the same on every broker)."""

    replication_factor: int = 3
    election_timeout_ms: int = 1_000  # randomized in [t, 2t)
    lag_max_ms: int = 2_000  # ISR: longest a follower may stay behind
    fetch_retry_ms: int = 50  # a follower whose fetch failed waits this long to fetch again
    fetch_wait_ms: int = 200  # a follower fetch finding nothing waits this long at the leader
    fetch_timeout_ms: int = 500
    ack_timeout_ms: int = 10_000  # acks=all: longest a produce waits for the ISR
    commit_on_majority: bool = False  # see ``ReplicaConfig``: a majority, not the whole ISR
    # A follower fsyncs the records it fetched on the event loop, not in the group commit's
    # worker thread: two thread hand-offs fewer on every write's path, but the loop stalls for
    # the fsync. For a broker that runs one log and little else (the replicated queue's).
    follower_sync_inline: bool = False

    def __post_init__(self) -> None:
        for flag in ("commit_on_majority", "follower_sync_inline"):
            if type(getattr(self, flag)) is not bool:
                raise InvalidArgument(f"{flag} must be a bool")
        for name in self.__dataclass_fields__:
            if name in ("commit_on_majority", "follower_sync_inline"):
                continue
            if type(getattr(self, name)) is not int or getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be a positive integer")
        if self.fetch_timeout_ms <= self.fetch_wait_ms:
            raise InvalidArgument("fetch_timeout_ms must exceed fetch_wait_ms")
