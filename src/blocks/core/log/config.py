"""Configuration, counters and argument checks of ``blocks.core.log``.

Theory of operation: everything here is checked before the log touches a file, so that bad
arguments raise ``InvalidArgument`` with nothing written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from blocks.core.errors import InvalidArgument
from blocks.core.inputs import bytes_within
from blocks.core.log.format import HEADER_BYTES, LENGTH_MAX

__all__ = [
    "FsyncPolicy",
    "LogConfig",
    "LogStats",
    "MiB",
    "as_offset",
    "as_payload",
    "as_payloads",
]

FsyncPolicy = Literal["always", "batch", "never"]
_POLICIES = ("always", "batch", "never")
MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Limits and policy of a ``SegmentLog``; validated when built."""

    segment_bytes_max: int = 64 * MiB
    fsync: FsyncPolicy = "always"
    record_bytes_max: int = 8 * MiB  # lowered to fit a segment when segments are smaller
    batch_delay_ms: float = 2.0  # group-commit window
    batch_records_max: int = 4096  # pending records that end a window early
    pending_records_max: int = 65_536  # written-but-not-durable records before Overloaded
    index_interval_bytes: int = 4096  # sparse index: one entry per this many bytes
    padding_bytes: int = 256 * 1024  # filler written ahead of the active end

    def __post_init__(self) -> None:
        if self.fsync not in _POLICIES:
            raise InvalidArgument(f"fsync must be one of {_POLICIES}, got {self.fsync!r}")
        if not 2 * HEADER_BYTES <= self.segment_bytes_max <= 2**62:
            raise InvalidArgument(f"segment_bytes_max out of range: {self.segment_bytes_max}")
        if not 0 <= self.record_bytes_max <= min(LENGTH_MAX, self.segment_bytes_max - HEADER_BYTES):
            raise InvalidArgument(
                f"record_bytes_max must be within 0..{self.segment_bytes_max - HEADER_BYTES} "
                f"(a record must fit in a segment), got {self.record_bytes_max}"
            )
        if not 0 <= self.batch_delay_ms <= 10_000:
            raise InvalidArgument(f"batch_delay_ms must be within 0..10000: {self.batch_delay_ms}")
        if not 1 <= self.batch_records_max <= self.pending_records_max:
            raise InvalidArgument("need 1 <= batch_records_max <= pending_records_max")
        if not 1 <= self.index_interval_bytes <= 1 << 24:
            raise InvalidArgument(f"index_interval_bytes out of range: {self.index_interval_bytes}")
        if not 0 <= self.padding_bytes <= 64 * MiB:
            raise InvalidArgument(f"padding_bytes must be within 0..{64 * MiB}")


@dataclass(frozen=True, slots=True)
class LogStats:
    """Counters since open and the current shape of the log."""

    records_appended: int
    bytes_appended: int
    fsyncs: int  # data fsyncs of segment files
    directory_fsyncs: int
    segments: int
    index_entries: int
    first_offset: int
    next_offset: int
    durable_offset: int


def as_payload(record: object, record_bytes_max: int) -> bytes:
    """One record as ``bytes`` of at most ``record_bytes_max``; ``InvalidArgument`` else."""
    return bytes_within(record, "a log record", record_bytes_max, "record_bytes_max")


def as_payloads(records: Iterable[object], record_bytes_max: int) -> list[bytes]:
    """Check a batch of records before any is written; ``InvalidArgument`` for a bad one."""
    if isinstance(records, bytes | bytearray | memoryview | str):
        raise InvalidArgument("append_many takes an iterable of records, not one record")
    # ``as_payload`` per record, without its frame: a batch may hold many small records.
    return [
        bytes_within(record, "a log record", record_bytes_max, "record_bytes_max")
        for record in records
    ]


def as_offset(offset: object) -> int:
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise InvalidArgument(f"an offset must be an int, got {type(offset).__name__}")
    return offset
