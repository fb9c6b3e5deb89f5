"""A counters node's state on disk: a log of its own updates and a snapshot of everything.

Theory of operation
-------------------
``DATA_DIR/log`` is a ``blocks.core.log.SegmentLog`` of ``CountersNode`` records;
``DATA_DIR/snapshot`` (replaced with ``blocks.core.files.write_atomically``) holds the whole
node state and the log offset it covers. The server applies a record to the node, appends it
and answers only once the append is durable (``record``: group commit under
``fsync="batch"``; one fsync per call under ``always``). Apply and the append's write happen
with no await between them, so a snapshot taken by another task never holds a record's effect
without its offset counting it, and replay never applies a record twice.

The log and snapshot files are ``blocks.core.snapshot_log.SnapshotLog``'s. ``open`` restores
the snapshot, then replays the records after its offset: the node's own
entries come back exactly as acknowledged (a restarted node must never reuse its CRDT entries
below what peers hold). ``maybe_snapshot`` writes a snapshot once ``snapshot_records`` records
have been logged since the last one, or when the caller's timer says so, then drops log
segments wholly below it. ``close`` snapshots and closes the log.
"""

from __future__ import annotations

import logging
from typing import Any

from blocks.core.errors import BlocksError, InvalidArgument
from blocks.core.log import FsyncPolicy
from blocks.core.snapshot_log import SnapshotLog
from blocks.counters.node import CountersNode, Record

__all__ = ["SNAPSHOT_BYTES_MAX", "SNAPSHOT_RECORDS", "CountersStore"]

SNAPSHOT_RECORDS = 10_000
"""Records logged between two snapshots (bounds replay time after a crash)."""
SNAPSHOT_BYTES_MAX = 512 * 1024 * 1024
_log = logging.getLogger(__name__)


class CountersStore:
    """The durable side of one ``CountersNode`` under ``directory``."""

    def __init__(
        self,
        directory: str,
        node: CountersNode,
        *,
        fsync: FsyncPolicy = "batch",
        snapshot_records: int = SNAPSHOT_RECORDS,
    ) -> None:
        self._node = node
        self._storage = SnapshotLog(
            directory,
            "counters",
            fsync=fsync,
            snapshot_records=snapshot_records,
            snapshot_bytes_max=SNAPSHOT_BYTES_MAX,
        )
        self.replayed = 0
        self.skipped = 0  # records that no longer apply (a bound reached in another order)

    @property
    def snapshots(self) -> int:
        return self._storage.snapshots

    def open(self) -> None:
        """Restore the snapshot and replay the log after it into the node."""
        self._storage.open(self._node.restore, self._replay)

    def _replay(self, record: Any) -> None:
        try:
            self._node.apply(record)
            self.replayed += 1
        except (InvalidArgument, BlocksError) as error:
            self.skipped += 1
            _log.warning("counters log record skipped on replay: %s", error)

    async def record(self, record: Record) -> None:
        """Log ``record`` (already applied); returns once it is durable."""
        await self._storage.append(record)

    def maybe_snapshot(self, *, force: bool = False) -> bool:
        """Snapshot if ``snapshot_records`` were logged since the last one (or ``force``)."""
        return self._storage.maybe_snapshot(self._node.snapshot, force=force)

    def close(self, *, snapshot: bool = True) -> None:
        """Snapshot (unless ``snapshot=False``, which leaves the files as kill -9 would) and
        close the log."""
        self._storage.close(self._node.snapshot if snapshot else None)
