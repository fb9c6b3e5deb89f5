"""A state machine's durability: a log of its changes and, now and then, a snapshot of all of it.

Theory of operation
-------------------
``DIR/log`` is a ``blocks.core.log.SegmentLog`` of msgpack records, one per change the owner
applied; ``DIR/snapshot`` (replaced with ``blocks.core.files.write_atomically``) holds the
owner's whole state and the log offset it covers, as ``[format, offset, state]``. The owner
applies a change, then ``append``s its record and answers only once the append is durable
(group commit under ``fsync="batch"``, one fsync per call under ``always``). When the apply
and the append's write happen with no ``await`` between them, a snapshot taken by another task
never holds a change without its offset counting it, and a replay never applies one twice.

``open`` hands the snapshot's state to ``restore``, then each record after its offset to
``replay``. ``maybe_snapshot`` asks the owner for its state once ``snapshot_records`` records
were appended since the last snapshot (or when forced), writes it, and drops the log segments
wholly below it, which bounds both the disk and the replay after a crash. ``close`` snapshots
and closes the log.

A damaged snapshot raises ``Corruption`` naming the file; the log's own recovery handles a torn
tail (``blocks.core.log``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from blocks.core.codec import pack, unpack
from blocks.core.errors import Corruption, InvalidArgument, PeerError
from blocks.core.files import write_atomically
from blocks.core.log import FsyncPolicy, SegmentLog

__all__ = ["SNAPSHOT_RECORDS_MAX", "SnapshotLog"]

SNAPSHOT_RECORDS_MAX = 10_000_000
SEGMENT_BYTES_MAX = 8 * 1024 * 1024
_FORMAT = 1


class SnapshotLog:
    """The log and snapshot of one state machine under ``directory`` (see the module docs).

    ``what`` names the state in errors ("counters", "rate-limit"). ``snapshot_bytes_max``
    bounds a snapshot both when written and when read back."""

    def __init__(
        self,
        directory: str,
        what: str,
        *,
        fsync: FsyncPolicy = "batch",
        snapshot_records: int,
        snapshot_bytes_max: int,
    ) -> None:
        if not 0 < snapshot_records <= SNAPSHOT_RECORDS_MAX:
            raise InvalidArgument(f"snapshot_records must be in [1, {SNAPSHOT_RECORDS_MAX:,}]")
        os.makedirs(directory, exist_ok=True)
        self._directory = directory
        self._what = what
        self._snapshot_path = os.path.join(directory, "snapshot")
        self._fsync: FsyncPolicy = fsync
        self._snapshot_records = snapshot_records
        self._snapshot_bytes_max = snapshot_bytes_max
        self._snapshot_offset = 0
        self._log: SegmentLog | None = None
        self.snapshots = 0

    def open(self, restore: Callable[[Any], None], replay: Callable[[Any], None]) -> None:
        """Give the snapshot's state (if there is one) to ``restore``, then every record
        logged after it, in order, to ``replay``. ``restore`` raising ``InvalidArgument``,
        ``PeerError``, ``TypeError`` or ``ValueError`` means a damaged snapshot: ``Corruption``."""
        state = self._read_snapshot()
        if state is not None:
            try:
                restore(state)
            except (InvalidArgument, PeerError, AttributeError, TypeError, ValueError) as error:
                raise Corruption(f"{self._snapshot_path}: {error}") from None
        log = SegmentLog(
            os.path.join(self._directory, "log"),
            fsync=self._fsync,
            segment_bytes_max=SEGMENT_BYTES_MAX,
        )
        self._log = log
        for _, payload in log.iter_from(max(self._snapshot_offset, log.first_offset)):
            replay(unpack(payload))

    def _read_snapshot(self) -> Any:
        try:
            with open(self._snapshot_path, "rb") as handle:
                data = handle.read(self._snapshot_bytes_max + 1)
        except FileNotFoundError:
            return None
        try:
            snapshot = unpack(data, size_max=self._snapshot_bytes_max)
            if not isinstance(snapshot, list) or len(snapshot) != 3 or snapshot[0] != _FORMAT:
                raise InvalidArgument(f"not a version-{_FORMAT} {self._what} snapshot")
            _, offset, state = snapshot
            if type(offset) is not int or offset < 0:
                raise InvalidArgument("bad log offset")
        except (InvalidArgument, PeerError) as error:
            raise Corruption(f"{self._snapshot_path}: {error}") from None
        self._snapshot_offset = offset
        return state

    def _require_log(self) -> SegmentLog:
        if self._log is None:
            raise InvalidArgument(f"the {self._what} store is not open")
        return self._log

    async def append(self, record: Any) -> None:
        """Log ``record`` (already applied by the owner); returns once it is durable."""
        await self._require_log().append_async(pack(record))

    def maybe_snapshot(self, state: Callable[[], Any], *, force: bool = False) -> bool:
        """Snapshot ``state()`` if ``snapshot_records`` records were logged since the last
        snapshot (or ``force``); return whether it did."""
        log = self._require_log()
        offset = log.next_offset
        if not force and offset - self._snapshot_offset < self._snapshot_records:
            return False
        data = pack([_FORMAT, offset, state()], size_max=self._snapshot_bytes_max)
        write_atomically(self._snapshot_path, data)
        self._snapshot_offset = offset
        self.snapshots += 1
        log.truncate_before(offset)
        return True

    def close(self, state: Callable[[], Any] | None) -> None:
        """Snapshot ``state()`` and close the log; with ``None``, close it as a crash leaves
        it, with no snapshot (for tests of the replay). Idempotent."""
        if self._log is None:
            return
        try:
            if state is not None:
                self.maybe_snapshot(state, force=True)
        finally:
            self._log.close()
            self._log = None
