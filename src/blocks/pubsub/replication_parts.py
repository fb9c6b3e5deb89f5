"""Small pieces of the replication driver: configuration, placement, record wire form, and
the epoch history of a stored log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blocks.core.errors import InvalidArgument, PeerError
from blocks.core.hashing import rendezvous
from blocks.pubsub.record import StoredRecord

__all__ = [
    "ReplicationConfig",
    "epoch_history",
    "record_from_wire",
    "record_to_wire",
    "replica_set",
]


def replica_set(topic: str, partition: int, nodes: list[str], factor: int) -> tuple[str, ...]:
    """The brokers holding a partition, preferred leader first."""
    return tuple(rendezvous(f"{topic}/{partition}", sorted(nodes), min(factor, len(nodes))))


def record_to_wire(record: StoredRecord) -> list[Any]:
    return [
        record.offset,
        record.timestamp_ms,
        record.key,
        record.value,
        record.producer_id,
        record.sequence,
        record.epoch,
        record.control,
    ]


def record_from_wire(row: Any) -> StoredRecord:
    try:
        offset, timestamp_ms, key, value, producer_id, sequence, epoch, control = row
        record = StoredRecord(
            offset, timestamp_ms, key, value, producer_id, sequence, epoch, control
        )
    except (TypeError, ValueError):
        raise PeerError("malformed replicated record") from None
    if not (
        type(offset) is int
        and type(timestamp_ms) is int
        and type(epoch) is int
        and isinstance(value, bytes)
        and (key is None or isinstance(key, bytes))
    ):
        raise PeerError("malformed replicated record")
    return record


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """Timing and placement of a cluster's replication (the same on every broker)."""

    replication_factor: int = 3
    election_timeout_ms: int = 1_000  # randomized in [t, 2t)
    lag_max_ms: int = 2_000  # ISR: longest a follower may stay behind
    tick_ms: int = 50
    fetch_wait_ms: int = 200  # a follower fetch finding nothing waits this long at the leader
    fetch_timeout_ms: int = 500
    ack_timeout_ms: int = 10_000  # acks=all: longest a produce waits for the ISR
    commit_on_majority: bool = False  # see ``ReplicaConfig``: a majority, not the whole ISR

    def __post_init__(self) -> None:
        if type(self.commit_on_majority) is not bool:
            raise InvalidArgument("commit_on_majority must be a bool")
        for name in self.__dataclass_fields__:
            if name == "commit_on_majority":
                continue
            if type(getattr(self, name)) is not int or getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be a positive integer")
        if self.fetch_timeout_ms <= self.fetch_wait_ms:
            raise InvalidArgument("fetch_timeout_ms must exceed fetch_wait_ms")


def epoch_history(read: Any, first_offset: int) -> list[tuple[int, int]]:
    """``(epoch, first offset)`` of every epoch in a stored log."""
    history: list[tuple[int, int]] = []
    offset = first_offset
    while batch := read(offset, 1000, 1 << 24, include_control=True):
        for record in batch:
            if not history or record.epoch != history[-1][0]:
                history.append((record.epoch, record.offset))
        offset = batch[-1].offset + 1
    return history
