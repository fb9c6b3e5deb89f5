"""``SearchJournal``: a search node's write-ahead log and snapshots in its data directory.

Theory of operation. A node's state (vector index, documents, embeddings, typeahead counts) is
a deterministic function of the mutations applied to it in order. The journal keeps that order
on disk in two parts:

* a **write-ahead log** (``<data-dir>/log``, a ``blocks.core.log.SegmentLog``). Every
  acknowledged mutation (``add``, ``remove``, ``train``, ``centroids``, ``index-docs``,
  ``delete-docs``) is appended *and fsynced* (``append_durable``) before it is applied and
  answered, so a crash, ``kill -9`` or power loss included, cannot lose it. Typeahead queries are appended without
  their own fsync (``append_soft``): they reach the kernel at once, so a process crash keeps
  them, and they become power-loss durable with the next durable record or snapshot. A
  record is logged before it is applied, so a mutation that then fails validation is in the
  log too; replay meets the same state and the same failure, and skips it (``replay``
  counts those as ``skipped``).
* **snapshots** (``<data-dir>/snapshot-<offset>/``): the whole state written by the node's
  ``save`` while no mutation runs, tagged with the log offset it includes everything below.
  A snapshot is written into its own new directory, every file in it fsynced, and only then
  named current by atomically replacing ``<data-dir>/snapshot.json`` (and fsyncing the data
  directory). A crash halfway through a snapshot therefore leaves the previous snapshot and
  the log that follows it untouched. Older snapshot directories and log segments wholly below
  the new offset are deleted afterwards.

Restart is: load the current snapshot (no rebuild from raw vectors), then replay the log from
its offset. The cost of replay is bounded by checkpointing: the node takes a snapshot once
``records_since_snapshot`` reaches its ``checkpoint_records`` (and on a clean stop).

Limits: one record at most ``RECORD_BYTES_MAX``; a bigger batch is refused with
``InvalidArgument`` by the log before anything changes. One process per data directory (the
log's lock file; a second server gets ``FailedPrecondition``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

from blocks.core.codec import pack, unpack
from blocks.core.errors import Corruption, InvalidArgument
from blocks.core.log import SegmentLog
from blocks.search.vectors import atomic_write

__all__ = [
    "CHECKPOINT_RECORDS_DEFAULT",
    "MANIFEST_NAME",
    "RECORD_BYTES_MAX",
    "SearchJournal",
]

MiB = 1 << 20
RECORD_BYTES_MAX = 64 * MiB
SEGMENT_BYTES_MAX = 256 * MiB
CHECKPOINT_RECORDS_DEFAULT = 10_000
MANIFEST_NAME = "snapshot.json"
SNAPSHOT_PREFIX = "snapshot-"


def _fsync_path(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(root: str) -> None:
    """fsync every file and directory under ``root`` (whatever the index's ``save`` wrote)."""
    for directory, _subdirs, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(os.path.join(directory, name))
        _fsync_path(directory)


class SearchJournal:
    """The log and snapshots of one data directory; see the module docstring.

    Not thread-safe on its own: the node calls it under its write lock.
    """

    def __init__(self, data_dir: str, *, checkpoint_records: int = CHECKPOINT_RECORDS_DEFAULT):
        if checkpoint_records < 1:
            raise InvalidArgument(
                f"checkpoint_records must be at least 1, got {checkpoint_records}"
            )
        self.data_dir = data_dir
        self.checkpoint_records = checkpoint_records
        os.makedirs(data_dir, exist_ok=True)
        # fsync "never": this class fsyncs explicitly (append_durable, snapshots, close).
        self.log = SegmentLog(
            os.path.join(data_dir, "log"),
            fsync="never",
            segment_bytes_max=SEGMENT_BYTES_MAX,
            record_bytes_max=RECORD_BYTES_MAX,
        )
        self.snapshot_offset, self.snapshot_path = self._read_manifest()
        self.replay_skipped = 0

    def _read_manifest(self) -> tuple[int, str | None]:
        path = os.path.join(self.data_dir, MANIFEST_NAME)
        if not os.path.exists(path):
            return 0, None
        try:
            with open(path, encoding="utf-8") as handle:
                manifest = json.load(handle)
            offset, name = int(manifest["offset"]), str(manifest["directory"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise Corruption(f"cannot read {path}: {error}") from None
        snapshot = os.path.join(self.data_dir, name)
        if not name.startswith(SNAPSHOT_PREFIX) or not os.path.isdir(snapshot):
            raise Corruption(f"{path} names a missing snapshot {name!r}")
        if offset < self.log.first_offset:
            raise Corruption(f"snapshot offset {offset} is below the log's first record")
        return offset, snapshot

    @property
    def records_since_snapshot(self) -> int:
        return self.log.next_offset - self.snapshot_offset

    def append_durable(self, record: dict[str, Any]) -> None:
        """Append ``record`` and fsync; when this returns it survives any crash."""
        self.log.append(pack(record, size_max=RECORD_BYTES_MAX))
        self.log.sync()

    def append_soft(self, record: dict[str, Any]) -> None:
        """Append ``record`` without an fsync of its own (see the module docstring)."""
        self.log.append(pack(record, size_max=RECORD_BYTES_MAX))

    def replay(self) -> Iterator[dict[str, Any]]:
        """The records after the current snapshot, oldest first."""
        for _offset, data in self.log.iter_from(self.snapshot_offset):
            record = unpack(data, size_max=RECORD_BYTES_MAX)
            if not isinstance(record, dict) or "op" not in record:
                raise Corruption("a search log record is not a mutation")
            yield record

    def should_checkpoint(self) -> bool:
        return self.records_since_snapshot >= self.checkpoint_records

    def write_snapshot(self, save: Callable[[str], None]) -> str:
        """Write a new snapshot with ``save(directory)`` and make it current; returns its path.

        The caller guarantees no mutation runs meanwhile, so the state saved is exactly the
        log below ``next_offset``.
        """
        offset = self.log.next_offset
        self.log.sync()  # soft records below the offset become durable with the snapshot
        name = f"{SNAPSHOT_PREFIX}{offset:020d}"
        path = os.path.join(self.data_dir, name)
        if path == self.snapshot_path:
            return path  # nothing was logged since: this snapshot is current
        if os.path.exists(path):
            shutil.rmtree(path)  # a snapshot a crash interrupted before naming it current
        os.makedirs(path)
        save(path)
        fsync_tree(path)
        payload = json.dumps({"offset": offset, "directory": name}).encode("utf-8")
        atomic_write(os.path.join(self.data_dir, MANIFEST_NAME), lambda f: f.write(payload))
        _fsync_path(self.data_dir)
        self.snapshot_offset, self.snapshot_path = offset, path
        for entry in os.listdir(self.data_dir):
            if entry.startswith(SNAPSHOT_PREFIX) and entry != name:
                shutil.rmtree(os.path.join(self.data_dir, entry), ignore_errors=True)
        self.log.truncate_before(offset)
        return path

    def close(self) -> None:
        """fsync what was appended, release the log. Idempotent."""
        if not self.log.closed:
            self.log.sync()
            self.log.close()
