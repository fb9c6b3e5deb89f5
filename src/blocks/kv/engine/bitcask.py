"""Bitcask: a durable, embedded, log-structured hash table for one process.

Theory of operation (after Basho's Bitcask design):

* **Data files.** Every ``put`` and ``delete`` appends one checksummed record to the single
  *active* file (``format.py``); older files are immutable. When the active file passes
  ``file_bytes_max`` it is fsynced and a new one starts.
* **Preallocation.** Under ``always``/``batch`` the active file is zero-filled up to
  ``PREALLOCATE_BYTES`` ahead of its records, so appending does not change the file's size:
  the group commit's ``fdatasync`` then writes data blocks and no metadata (on ext4 it skips
  a journal commit, about half the fsync's time here). Sealing and ``close`` cut the zeros;
  after a crash, recovery cuts an all-zero tail in any file (zeros fail the checksum).
* **Keydir.** An in-memory dict maps each live key to ``(file, offset, size, timestamp)``, so
  a ``get`` is one dict lookup and one slice of a memory map of the file (``datafile.py``).
  Every key lives in memory; values do not.
* **Tombstones.** ``delete`` appends a tombstone so that replaying the files forgets the key.
* **Merge.** ``merge()`` copies the live records of every file but the active one into new
  files with hint files and commits the result with one marker file (``compaction.py``); writes
  and reads go on meanwhile. The copied records are byte-for-byte the originals, so their
  checksums still guard them.
* **Recovery.** Opening replays hint and data files to rebuild the keydir and truncates a
  torn tail of the newest file (``recovery.py``). Each open writes to a fresh active file.
* **Durability** is chosen per store: ``always`` (a write returns once fsynced; concurrent
  writers share an fsync), ``batch`` (the same, but the fsync leader lingers up to
  ``batch_delay_ms`` to gather more writers) or ``never`` (the OS flushes when it likes; a
  process crash loses nothing, a machine crash may lose recent writes). See
  ``group_commit.py``.
* **Disk errors.** An append the disk refuses (``ENOSPC``, ``EIO``) is cut back and raises
  ``StorageFull`` or ``StorageError``; the store takes writes again once the disk does. A
  failed fsync makes it refuse all work with ``StorageError`` until reopened: after one the
  page cache can no longer be trusted.
* **One writer.** An ``flock`` on ``LOCK`` refuses a second open of the same directory.

A lock serialises keydir changes and file appends; fsyncs and merge copying run outside it.
Under ``always``/``batch`` a write joins the group commit's queue in one lock hold, and the
batch's leader writes every queued record with one ``pwrite``, fsyncs, and only then puts
them in the keydir: a reader never sees a write before its fsync, and a delete's answer is
decided in log order by the leader.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn, Self

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import (
    Corruption,
    FailedPrecondition,
    InvalidArgument,
    StorageError,
    storage_error,
)
from blocks.core.files import pwrite_all
from blocks.kv.engine.compaction import run_merge
from blocks.kv.engine.datafile import DataFile
from blocks.kv.engine.files import (
    REGULAR,
    DirectoryLock,
    FileId,
    fsync_directory,
    write_zeros,
)
from blocks.kv.engine.format import encode_record, record_value
from blocks.kv.engine.group_commit import GroupCommit, SyncFailed, Ticket, WriteFailed
from blocks.kv.engine.recovery import Location, RecoveryReport, recover
from blocks.kv.limits import (
    KEY_BYTES_MAX,
    VALUE_BYTES_MAX_DEFAULT,
    VALUE_BYTES_MAX_LIMIT,
    Key,
    check_batch_size,
    check_key,
    check_value,
)

__all__ = ["Bitcask", "BitcaskStats", "SyncPolicy"]

SyncPolicy = Literal["always", "batch", "never"]
_SYNC_POLICIES: tuple[str, ...] = ("always", "batch", "never")
FILE_BYTES_MAX_DEFAULT = 64 * 1024 * 1024
BATCH_DELAY_MS_DEFAULT = 2.0
BATCH_MAX_DEFAULT = 128
BATCH_BYTES_MAX = 4 * 1024 * 1024
"""Most bytes of records one group commit writes past its first write (one ``pwrite``)."""
PREALLOCATE_BYTES = 1024 * 1024
"""Zero-filled ahead of the active file's end (``sync`` other than ``never``): records then
overwrite blocks the file already has, so an ``fdatasync`` writes data only, no size change."""


_Records = Sequence[tuple[bytes, bytes, bool]]
"""Encoded records of one write: ``(key, record, tombstone)`` each."""

_Work = tuple[_Records, int, bool]
"""A durable write's ticket: its records, their timestamp, whether it is a delete."""


class _Plan:
    """Where one group commit's records go, and what the keydir learns once they are durable.

    ``updates`` pairs each written key with its new location (``None``: a tombstone).
    ``write_batch`` fills in what went wrong, for ``finish_batch`` to record under the lock.
    """

    __slots__ = ("broken", "cut", "end", "file", "offset", "payload", "updates")

    def __init__(
        self,
        file: DataFile,
        offset: int,
        payload: bytes,
        updates: list[tuple[bytes, Location | None]],
    ) -> None:
        self.file = file
        self.offset = offset
        self.payload = payload
        self.end = offset + len(payload)
        self.updates = updates
        self.cut = False  # a failed write was cut back to ``offset``
        self.broken: str | None = None  # why the store must refuse work from now on


@dataclass(frozen=True, slots=True)
class BitcaskStats:
    """A snapshot of a store's shape; ``dead_bytes`` is what a merge would reclaim."""

    keys: int
    files: int
    total_bytes: int
    live_bytes: int
    dead_bytes: int
    fsyncs: int
    merges: int


class Bitcask:
    """A single-node durable key-value store; thread-safe; use ``Bitcask.open``."""

    def __init__(
        self,
        directory: Path,
        *,
        sync: SyncPolicy,
        value_bytes_max: int,
        file_bytes_max: int,
        batch_delay_ms: float,
        batch_max: int,
        clock: Clock,
        mmap_reads: bool = True,
    ) -> None:
        if sync not in _SYNC_POLICIES:
            raise InvalidArgument(f"sync must be one of {_SYNC_POLICIES}, got {sync!r}")
        if not 0 <= value_bytes_max <= VALUE_BYTES_MAX_LIMIT:
            raise InvalidArgument(f"value_bytes_max must be in [0, {VALUE_BYTES_MAX_LIMIT}]")
        if file_bytes_max < 1:
            raise InvalidArgument("file_bytes_max must be >= 1")
        self.directory = directory
        self.sync: SyncPolicy = sync
        self.value_bytes_max = value_bytes_max
        self.file_bytes_max = file_bytes_max
        self.mmap_reads = mmap_reads
        self._preallocate_bytes = PREALLOCATE_BYTES if sync != "never" else 0
        self._clock = clock
        self._lock = threading.RLock()
        self._merge_lock = threading.Lock()
        self._group: GroupCommit[_Work, _Plan] = GroupCommit(
            self._lock,
            prepare=self._prepare_batch,
            write=self._write_batch,
            finish=self._finish_batch,
            delay_s=batch_delay_ms / 1000.0 if sync == "batch" else 0.0,
            batch_max=batch_max,
            batch_bytes_max=BATCH_BYTES_MAX,
        )
        directory.mkdir(parents=True, exist_ok=True)
        self._dir_lock: DirectoryLock | None = DirectoryLock(directory)
        self._files: list[DataFile | None] = []
        self._merges = 0
        self._fsyncs = 0  # group commits' fsyncs
        self._closing = False  # close() is draining the group commit: no new writes
        self._broken: str | None = None
        try:
            recovered = recover(
                directory, key_len_max=KEY_BYTES_MAX, value_len_max=VALUE_BYTES_MAX_LIMIT
            )
            self.recovery: RecoveryReport = recovered.report
            self._keydir: dict[bytes, Location] = recovered.keydir
            for file_id, size in recovered.files:
                fd = os.open(directory / file_id.data_name(), os.O_RDONLY)
                self._register(file_id, fd, size)
            self._next_major = recovered.next_major
            self._active = self._new_active_file()
        except BaseException:
            self._close_files()
            self._dir_lock.release()
            raise

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        sync: SyncPolicy = "always",
        *,
        value_bytes_max: int = VALUE_BYTES_MAX_DEFAULT,
        file_bytes_max: int = FILE_BYTES_MAX_DEFAULT,
        batch_delay_ms: float = BATCH_DELAY_MS_DEFAULT,
        batch_max: int = BATCH_MAX_DEFAULT,
        clock: Clock | None = None,
        mmap_reads: bool = True,
    ) -> Bitcask:
        """Open (creating if needed) the store in directory ``path``.

        ``mmap_reads=False`` reads with ``pread``: a disk media error then raises
        ``StorageError`` instead of ending the process with ``SIGBUS`` (``datafile.py``).

        Raises ``FailedPrecondition`` if another open store holds the directory, and
        ``InvalidArgument`` for a bad option. ``recovery`` on the result says what the
        open had to repair.
        """
        return cls(
            Path(path),
            sync=sync,
            value_bytes_max=value_bytes_max,
            file_bytes_max=file_bytes_max,
            batch_delay_ms=batch_delay_ms,
            batch_max=batch_max,
            clock=clock or SystemClock(),
            mmap_reads=mmap_reads,
        )

    # -- writes ---------------------------------------------------------------------------

    def put(self, key: Key, value: bytes) -> None:
        """Store ``value`` under ``key``; durable on return unless ``sync="never"``."""
        encoded_key = check_key(key)
        data = check_value(value, self.value_bytes_max)
        timestamp_ms = self._clock.now_ms()
        record = encode_record(encoded_key, data, timestamp_ms)
        self._write([(encoded_key, record, False)], timestamp_ms, len(record))

    def put_many(self, items: Iterable[tuple[Key, bytes]]) -> None:
        """Store several pairs with one write and one fsync; later pairs win on repeats.

        Every pair is validated before anything is written. A crash may keep a prefix of
        the batch (it is not atomic), but never a torn record.
        """
        pairs = list(items)
        check_batch_size(len(pairs))
        timestamp_ms = self._clock.now_ms()
        batch: list[tuple[bytes, bytes, bool]] = []
        size_bytes = 0
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise InvalidArgument("put_many takes (key, value) pairs")
            encoded_key = check_key(pair[0])
            data = check_value(pair[1], self.value_bytes_max)
            record = encode_record(encoded_key, data, timestamp_ms)
            batch.append((encoded_key, record, False))
            size_bytes += len(record)
        if batch:
            self._write(batch, timestamp_ms, size_bytes)

    def delete(self, key: Key) -> bool:
        """Remove ``key``; return whether it was present. Durable like ``put``."""
        encoded_key = check_key(key)
        if self.sync != "never":
            # The group commit's leader checks for the key in log order (_prepare_batch).
            timestamp_ms = self._clock.now_ms()
            tombstone = encode_record(encoded_key, b"", timestamp_ms, tombstone=True)
            record = [(encoded_key, tombstone, True)]
            return bool(self._write_durably(record, timestamp_ms, True, len(tombstone)))
        with self._lock:
            self._check_open()
            if encoded_key not in self._keydir:
                return False
            timestamp_ms = self._clock.now_ms()
            tombstone = encode_record(encoded_key, b"", timestamp_ms, tombstone=True)
            # Check and append under one lock hold, so the answer matches what was written.
            self._append([(encoded_key, tombstone, True)], timestamp_ms)
        return True

    def _write(self, batch: _Records, timestamp_ms: int, size_bytes: int) -> None:
        """Append ``batch``; unless ``sync="never"``, return only once it is durable."""
        if self.sync == "never":
            self._append(batch, timestamp_ms)
        else:
            self._write_durably(batch, timestamp_ms, False, size_bytes)

    def _append(self, batch: _Records, timestamp_ms: int) -> None:
        """Write records (all stamped ``timestamp_ms``) and apply them to the keydir.

        ``sync="never"`` only: durable writes go through the group commit.
        """
        payload = b"".join(record for _, record, _ in batch)
        with self._lock:
            self._check_open()
            active = self._active
            if active.size > 0 and active.size + len(payload) > self.file_bytes_max:
                active = self._rotate()
            end = active.size + len(payload)
            if end > active.allocated:
                self._preallocate(active, end)
            try:
                pwrite_all(active.fd, payload, active.size)
            except OSError as error:
                self._undo_partial_write(active, error)
            file_no = active.file_no
            offset = active.size
            for key, record, tombstone in batch:
                if tombstone:
                    self._keydir.pop(key, None)
                else:
                    self._keydir[key] = Location(file_no, offset, len(record), timestamp_ms)
                offset += len(record)
            active.size = offset
            active.allocated = max(active.allocated, offset)

    def _preallocate(self, active: DataFile, end: int) -> None:
        """Zero-fill the active file ahead of ``end`` (lock held; no-op under ``never``).

        Up to ``PREALLOCATE_BYTES`` at a time, and not past ``file_bytes_max`` unless one
        write needs it. The zeros reach the disk with the next fsync; from then on an fsync
        of records in this range changes no file metadata. A crash leaves the zero tail
        behind the last record, which recovery recognises and cuts.
        """
        if not self._preallocate_bytes:
            return
        target = max(end, min(active.allocated + self._preallocate_bytes, self.file_bytes_max))
        try:
            write_zeros(active.fd, active.allocated, target)
        except OSError:
            # A disk without room for the zeros may still have room for the records: go on
            # without them (the write itself reports a full disk if it is one).
            try:
                os.ftruncate(active.fd, active.allocated)
            except OSError as error:
                self._broken = f"zero-fill failed and could not be undone: {error}"
                raise storage_error(error, "write") from None
            return
        active.allocated = target

    def _undo_partial_write(self, active: DataFile, error: OSError) -> None:
        """Cut a failed append back so later records are not stranded behind garbage.

        The store stays usable (a full disk that gets space back takes writes again) unless
        the cut itself fails.
        """
        try:
            os.ftruncate(active.fd, active.size)
            active.allocated = active.size
        except OSError:
            self._broken = f"write failed and could not be undone: {error}"
        raise storage_error(error, "write") from None

    def _write_durably(
        self, batch: _Records, timestamp_ms: int, is_delete: bool, size_bytes: int
    ) -> object:
        """Hand ``batch`` to the group commit; return its result once durable (module docs)."""
        ticket: Ticket[_Work] = Ticket((batch, timestamp_ms, is_delete), size_bytes)
        with self._lock:
            if self._dir_lock is None or self._broken is not None or self._closing:
                self._check_open()
            try:
                self._group.submit(ticket)
            except OSError as error:
                self._fsync_failed(error)
        try:
            return self._group.wait(ticket)
        except WriteFailed as failed:
            raise storage_error(failed.error, failed.doing) from None
        except OSError as error:
            self._fsync_failed(error)

    def _fsync_failed(self, error: OSError) -> NoReturn:
        """After a failed fsync the page cache can no longer be trusted: refuse all work."""
        with self._lock:
            if self._broken is None:
                self._broken = f"fsync failed: {error}"
        raise storage_error(error, "fsync") from None

    # -- the group commit's side (group_commit.py): one batch at a time -------------------

    def _prepare_batch(self, batch: list[Ticket[_Work]]) -> _Plan:
        """Decide where ``batch`` goes (lock held): rotate and zero-fill ahead if need be.

        Every earlier batch is in the keydir already, so a delete's "is the key there" is
        answered here, in log order, from the keydir and the batch's own earlier records;
        a delete of an absent key writes nothing.
        """
        if self._broken is not None:
            self._check_open()
        keydir = self._keydir
        present: dict[bytes, bool] | None = None
        if any(ticket.work[2] for ticket in batch):
            present = {}
        records: list[bytes] = []
        keys: list[tuple[bytes, int, int]] = []  # key, record size (0: tombstone), timestamp
        for ticket in batch:
            entries, timestamp_ms, _ = ticket.work
            for key, record, tombstone in entries:
                if present is not None:
                    if tombstone:
                        found = present.get(key, key in keydir)
                        ticket.result = found
                        if not found:
                            continue
                    present[key] = not tombstone
                records.append(record)
                keys.append((key, 0 if tombstone else len(record), timestamp_ms))
        payload = records[0] if len(records) == 1 else b"".join(records)
        active = self._active
        if active.size > 0 and active.size + len(payload) > self.file_bytes_max:
            active = self._seal_and_start()
        offset = active.size
        end = offset + len(payload)
        if end > active.allocated:
            self._preallocate(active, end)
        file_no = active.file_no
        updates: list[tuple[bytes, Location | None]] = []
        position = offset
        for (key, size, timestamp_ms), record in zip(keys, records, strict=True):
            location = Location(file_no, position, size, timestamp_ms) if size else None
            updates.append((key, location))
            position += len(record)
        return _Plan(active, offset, payload, updates)

    def _write_batch(self, plan: _Plan) -> None:
        """Write the plan's records with one ``pwrite`` and fsync them (no lock held).

        Only the leader writes the active file, and rotation and close wait for it. A plan
        with nothing to write (deletes of absent keys) needs no fsync: the keydir it was
        decided on holds only durable records.
        """
        if not plan.payload:
            return
        try:
            pwrite_all(plan.file.fd, plan.payload, plan.offset)
        except OSError as error:
            try:  # cut the failed append back, so later records are not stranded
                os.ftruncate(plan.file.fd, plan.offset)
                plan.cut = True
            except OSError:
                plan.broken = f"write failed and could not be undone: {error}"
            raise WriteFailed(error, "write") from None
        try:
            os.fdatasync(plan.file.fd)
        except OSError as error:
            plan.broken = f"fsync failed: {error}"
            raise SyncFailed(error) from None
        self._fsyncs += 1  # one batch in flight at a time: no race

    def _finish_batch(self, plan: _Plan, ok: bool) -> None:
        """Apply a durable plan to the keydir, or record why it failed (lock held)."""
        active = plan.file
        if not ok:
            if plan.cut:
                active.allocated = plan.offset
            if plan.broken is not None and self._broken is None:
                self._broken = plan.broken
            return
        keydir = self._keydir
        for key, location in plan.updates:
            if location is None:
                keydir.pop(key, None)
            else:
                keydir[key] = location
        active.size = plan.end
        if plan.end > active.allocated:
            active.allocated = plan.end

    # -- reads ----------------------------------------------------------------------------

    def get(self, key: Key) -> bytes | None:
        """Return the value stored under ``key``, or ``None``.

        Raises ``Corruption`` if the stored record fails its checksum: a damaged value is
        never returned.
        """
        # The hot path: a bytes key skips check_key (same checks, fewer calls).
        if type(key) is not bytes or len(key) > KEY_BYTES_MAX:
            key = check_key(key)
        with self._lock:
            if self._dir_lock is None or self._broken is not None:
                self._check_open()
            location = self._keydir.get(key)
            if location is None:
                return None
            open_file = self._files[location[0]]
            assert open_file is not None, "keydir points at a closed file"
            record = open_file.read(location[1], location[2])
        value = record_value(record, key)
        if value is None:
            raise Corruption(f"record for key at offset {location[1]} failed its checksum")
        return value

    def get_many(self, keys: Iterable[Key]) -> list[bytes | None]:
        """Return the values of ``keys`` in order (``None`` for absent ones)."""
        key_list = list(keys)
        check_batch_size(len(key_list))
        encoded = [check_key(key) for key in key_list]
        return [self.get(key) for key in encoded]

    def keys(self) -> list[bytes]:
        """A snapshot of every live key (as bytes), in no particular order."""
        with self._lock:
            self._check_open()
            return list(self._keydir)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keydir)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return check_key(key) in self._keydir

    def stats(self) -> BitcaskStats:
        with self._lock:
            self._check_open()
            total = sum(f.size for f in self._files if f is not None)
            live = sum(location.size for location in self._keydir.values())
            return BitcaskStats(
                keys=len(self._keydir),
                files=sum(1 for f in self._files if f is not None),
                total_bytes=total,
                live_bytes=live,
                dead_bytes=total - live,
                fsyncs=self._fsyncs,
                merges=self._merges,
            )

    # -- files ----------------------------------------------------------------------------

    def _new_active_file(self) -> DataFile:
        file_id = FileId(self._next_major, REGULAR)
        self._next_major += 1
        path = self.directory / file_id.data_name()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        if self.sync != "never":
            fsync_directory(self.directory)
        active = self._register(file_id, fd, 0)
        active.growing = True
        return active

    def _register(self, file_id: FileId, fd: int, size: int) -> DataFile:
        open_file = DataFile(file_id, len(self._files), fd, size, mmap_reads=self.mmap_reads)
        self._files.append(open_file)
        return open_file

    def _rotate(self) -> DataFile:
        """Seal the active file and start a new one once no batch is in flight; lock held."""
        self._group.wait_settled()
        return self._seal_and_start()

    def _seal_and_start(self) -> DataFile:
        """Seal the active file (fsynced unless ``never``) and start a new one; lock held, and
        no batch in flight but the caller's own."""
        self._cut_preallocated(self._active)
        if self.sync != "never":
            try:
                os.fdatasync(self._active.fd)
            except OSError as error:
                self._fsync_failed(error)
        try:
            active = self._new_active_file()
        except OSError as error:  # the sealed file stays active; a later write tries again
            raise storage_error(error, "new data file") from None
        self._active.growing = False
        self._active = active
        return active

    def _cut_preallocated(self, active: DataFile) -> None:
        """Cut the zero tail off a file about to be sealed; its fsync makes the cut durable."""
        if active.allocated > active.size:
            try:
                os.ftruncate(active.fd, active.size)
            except OSError as error:
                raise storage_error(error, "seal data file") from None
            active.allocated = active.size

    def _check_open(self) -> None:
        if self._dir_lock is None or self._closing:
            raise FailedPrecondition("the store is closed")
        if self._broken is not None:
            raise StorageError(f"the store is unusable until reopened: {self._broken}")

    # -- merge ----------------------------------------------------------------------------

    def merge(self) -> None:
        """Rewrite the live data of every sealed file into compact files with hints.

        Reads and writes continue while it copies; one merge runs at a time. Crash-safe at
        every point: either the old files or the merged ones are used on the next open.
        """
        with self._merge_lock:
            run_merge(self)
            self._merges += 1

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Flush (unless ``sync="never"``), close every file and release the directory.

        Waits for a running merge to finish. Closing twice is harmless.
        """
        with self._merge_lock, self._lock:
            if self._dir_lock is None:
                return
            self._closing = True  # refuse new writes; the pending ones are written first
            try:
                self._group.wait_settled(drain=True)
                if self._broken is None:
                    self._cut_preallocated(self._active)
                if self.sync != "never" and self._broken is None:
                    os.fdatasync(self._active.fd)
                if self._active.size == 0:
                    os.unlink(self.directory / self._active.file_id.data_name())
            finally:
                self._close_files()
                self._dir_lock.release()
                self._dir_lock = None

    def _close_files(self) -> None:
        for open_file in self._files:
            if open_file is not None:
                open_file.close()
        self._files = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._dir_lock is None else f"{len(self._keydir)} keys"
        return f"Bitcask({str(self.directory)!r}, sync={self.sync!r}, {state})"
