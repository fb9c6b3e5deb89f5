"""IDs that hold across nodes: Snowflake, UUIDv7, ULID, HLC and a ticket server.

``Snowflake`` gives 64-bit time-ordered IDs per leased worker id, ``Uuid7Generator`` and
``UlidGenerator`` give 128-bit IDs with no coordination, ``HybridLogicalClock`` orders events
across nodes, and ``TicketServer``/``TicketClient`` hand out durable blocks of integers.
"""

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
    "decode",
    "uuid7_unix_ms",
]
