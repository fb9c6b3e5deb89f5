"""``StoredRecord``: one record of a partition as it is stored and replicated.

A record is ``(offset, timestamp_ms, key, value, producer_id, sequence, epoch, control)``,
encoded as a msgpack list. Records written by a single broker leave out the last two fields
(epoch 0, not control), so logs written before replication existed read back unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from blocks.core.codec import pack, unpack
from blocks.core.errors import Corruption, PeerError

__all__ = ["StoredRecord", "newest_offsets", "record_from_wire", "record_to_wire"]


@dataclass(frozen=True, slots=True)
class StoredRecord:
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    producer_id: str | None = None
    sequence: int = -1  # the producer's sequence number, -1 without one
    epoch: int = 0  # the leader epoch that wrote it (0 on a single broker)
    control: bool = False  # an epoch marker or a hollow (compacted) record: no user data

    def encode(self) -> bytes:
        fields: list[object] = [
            self.timestamp_ms,
            self.key,
            self.value,
            self.producer_id,
            self.sequence,
        ]
        if self.epoch or self.control:
            fields += [self.epoch, self.control]
        return pack(fields)

    @classmethod
    def decode(cls, offset: int, data: bytes) -> StoredRecord:
        try:
            fields = unpack(data)
            timestamp_ms, key, value, producer_id, sequence = fields[:5]
            epoch, control = fields[5:7] if len(fields) == 7 else (0, False)
            return cls(offset, timestamp_ms, key, value, producer_id, sequence, epoch, control)
        except (ValueError, TypeError) as error:
            raise Corruption(f"record {offset} does not decode: {error}") from None

    def hollow(self) -> StoredRecord:
        """This record as compaction leaves it: offset, time and sequence, no data."""
        return StoredRecord(
            self.offset,
            self.timestamp_ms,
            None,
            b"",
            self.producer_id,
            self.sequence,
            self.epoch,
            True,
        )


def newest_offsets(records: Iterable[StoredRecord]) -> dict[bytes, int]:
    """The offset of the newest data record of each key."""
    newest: dict[bytes, int] = {}
    for record in records:
        if record.key is not None and not record.control:
            newest[record.key] = record.offset
    return newest


def record_to_wire(record: StoredRecord) -> list[Any]:
    """The replicated form: a fetch answer carries every field, epoch and control included."""
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
    """A record from a peer's fetch answer; ``PeerError`` if any field is malformed."""
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
