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

``open`` restores the snapshot, then replays the records after its offset: the node's own
entries come back exactly as acknowledged (a restarted node must never reuse its CRDT entries
below what peers hold). ``maybe_snapshot`` writes a snapshot once ``snapshot_records`` records
have been logged since the last one, or when the caller's timer says so, then drops log
segments wholly below it. ``close`` snapshots and closes the log.
"""

from __future__ import annotations

import logging
import os

from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, Corruption, InvalidArgument, PeerError
from blocks.core.files import write_atomically
from blocks.core.log import FsyncPolicy, SegmentLog
from blocks.counters.node import CountersNode, Record

__all__ = ["SNAPSHOT_BYTES_MAX", "SNAPSHOT_RECORDS", "CountersStore"]

SNAPSHOT_RECORDS = 10_000
"""Records logged between two snapshots (bounds replay time after a crash)."""
SNAPSHOT_BYTES_MAX = 512 * 1024 * 1024
SEGMENT_BYTES_MAX = 8 * 1024 * 1024
_FORMAT = 1
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
        if not 0 < snapshot_records <= 10_000_000:
            raise InvalidArgument("snapshot_records must be in [1, 10,000,000]")
        os.makedirs(directory, exist_ok=True)
        self._directory = directory
        self._snapshot_path = os.path.join(directory, "snapshot")
        self._node = node
        self._fsync: FsyncPolicy = fsync
        self._snapshot_records = snapshot_records
        self._log: SegmentLog | None = None
        self._snapshot_offset = 0
        self.replayed = 0
        self.skipped = 0  # records that no longer apply (a bound reached in another order)
        self.snapshots = 0

    def open(self) -> None:
        """Restore the snapshot and replay the log after it into the node."""
        self._snapshot_offset = self._load_snapshot()
        log = SegmentLog(
            os.path.join(self._directory, "log"),
            fsync=self._fsync,
            segment_bytes_max=SEGMENT_BYTES_MAX,
        )
        self._log = log
        start = max(self._snapshot_offset, log.first_offset)
        for _, payload in log.iter_from(start):
            try:
                self._node.apply(unpack(payload))
                self.replayed += 1
            except (InvalidArgument, BlocksError) as error:
                self.skipped += 1
                _log.warning("counters log record skipped on replay: %s", error)

    def _load_snapshot(self) -> int:
        try:
            with open(self._snapshot_path, "rb") as handle:
                data = handle.read(SNAPSHOT_BYTES_MAX + 1)
        except FileNotFoundError:
            return 0
        try:
            snapshot = unpack(data, size_max=SNAPSHOT_BYTES_MAX)
            if not isinstance(snapshot, list) or len(snapshot) != 3 or snapshot[0] != _FORMAT:
                raise InvalidArgument("not a version-1 counters snapshot")
            _, offset, state = snapshot
            if type(offset) is not int or offset < 0:
                raise InvalidArgument("bad log offset")
            self._node.restore(state)
        except (InvalidArgument, PeerError) as error:
            raise Corruption(f"{self._snapshot_path}: {error}") from None
        return offset

    def _require_log(self) -> SegmentLog:
        if self._log is None:
            raise InvalidArgument("the counters store is not open")
        return self._log

    async def record(self, record: Record) -> None:
        """Log ``record`` (already applied); returns once it is durable."""
        await self._require_log().append_async(pack(record))

    def maybe_snapshot(self, *, force: bool = False) -> bool:
        """Snapshot if ``snapshot_records`` were logged since the last one (or ``force``)."""
        log = self._require_log()
        offset = log.next_offset
        if not force and offset - self._snapshot_offset < self._snapshot_records:
            return False
        data = pack([_FORMAT, offset, self._node.snapshot()], size_max=SNAPSHOT_BYTES_MAX)
        write_atomically(self._snapshot_path, data)
        self._snapshot_offset = offset
        self.snapshots += 1
        log.truncate_before(offset)
        return True

    def close(self) -> None:
        if self._log is None:
            return
        try:
            self.maybe_snapshot(force=True)
        finally:
            self._log.close()
            self._log = None
