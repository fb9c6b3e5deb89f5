"""IDs that hold across nodes: Snowflake, UUIDv7, ULID, HLC and a ticket server.

``Snowflake`` gives 64-bit time-ordered IDs per leased worker id, ``Uuid7Generator`` and
``UlidGenerator`` give 128-bit IDs with no coordination, ``HybridLogicalClock`` orders events
across nodes, and ``TicketServer``/``TicketClient`` hand out durable blocks of integers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocks.sequencer.api import IdGenerator, LeaseCheck
from blocks.sequencer.hlc import HlcTimestamp, HybridLogicalClock
from blocks.sequencer.kvlease import KvLeaseConfig, KvLeases, KvWorkerLease
from blocks.sequencer.lease import LeaseTable, LockFileLeases, WorkerLease
from blocks.sequencer.snowflake import DEFAULT_EPOCH_MS, DecodedId, Layout, Snowflake, decode
from blocks.sequencer.tickets import TicketClient, TicketCore, TicketServer
from blocks.sequencer.timeids import Ulid, UlidGenerator, Uuid7Generator, uuid7_unix_ms

__all__ = [
    "DEFAULT_EPOCH_MS",
    "DecodedId",
    "HlcTimestamp",
    "HybridLogicalClock",
    "IdGenerator",
    "KvLeaseConfig",
    "KvLeases",
    "KvWorkerLease",
    "Layout",
    "LeaseCheck",
    "LeaseTable",
    "LockFileLeases",
    "Snowflake",
    "TicketClient",
    "TicketCore",
    "TicketServer",
    "Ulid",
    "UlidGenerator",
    "Uuid7Generator",
    "WorkerLease",
    "connect",
    "decode",
    "uuid7_unix_ms",
]


if TYPE_CHECKING:
    from blocks.sequencer.client import SequencerClient


def connect(
    address: str = "127.0.0.1:7304", *, token: str | None = None, timeout_s: float = 10.0
) -> SequencerClient:
    """An async client of the sequencer node at ``address``; use it with ``async with`` (``HOST:PORT``, the default is ``blocks sequencer serve``'s)."""
    from blocks.sequencer.client import SequencerClient

    return SequencerClient(address, token=token, timeout_s=timeout_s)
