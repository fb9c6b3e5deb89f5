"""The metadata journal: records appended to the core segment log, group-committed.

Theory of operation. Every metadata change of the store is one record (``records``)
appended to a ``blocks.core.log.SegmentLog``; the store's index is rebuilt at open by
replaying them (``replay``). A change is durable when the log says so: under ``fsync=True``
the log runs in ``batch`` mode and its group commit makes concurrent appends share one
fsync, so N small PUTs arriving together cost one or two fsyncs and no file creation.

The store's methods are synchronous and run on many threads, so the group commit here is a
leader/follower one on those threads. ``submit`` queues a record and returns a future that
resolves to the record's offset once it is durable; the store calls it under its own lock,
so queue order is commit order. Waiting on the future (``result()``) does the work: the
first waiter that finds no commit running becomes the leader, takes everything queued, in
order, appends it with one write, fsyncs (outside the log's lock, so reads of inline
objects never wait for it) and resolves every future of the batch; waiters that arrive
meanwhile wait, and the first of them leads the next batch. Records reach the log in
``submit`` order, one batch at a time, and replay reproduces exactly what the store decided.

A lone durable PUT thus writes and fsyncs its record in its own thread. An earlier design
handed each record to an asyncio loop on a thread of its own, which ran the fsync on yet
another thread: four thread wake-ups per commit, which cost a small durable PUT about half
a millisecond on two busy cores, several times the fsync itself (``docs/blob.md``). Without
fsync a ``submit`` is a plain append in the caller's thread.

Compaction (``rewrite``) writes the live state into a fresh log in a new directory
``journal-<generation>``, fsyncs it, then switches the ``CURRENT`` file to it by atomic
rename and deletes the old one. A crash before the rename leaves the old journal in charge
(the half-written new one is deleted at open); a crash after it leaves the new one. The
store calls it under its lock with no submission in flight.

``MemoryJournal`` is the same contract in memory, for a store without a directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Protocol

from blocks.core.errors import Corruption, InvalidArgument
from blocks.core.files import fsync_directory
from blocks.core.log import SegmentLog

__all__ = ["RECORD_BYTES_MAX", "Journal", "LogJournal", "MemoryJournal"]

_LOGGER = logging.getLogger("blocks.blob")
RECORD_BYTES_MAX = 8 * 1024 * 1024
SEGMENT_BYTES_MAX = 64 * 1024 * 1024
REWRITE_BATCH_RECORDS = 1024
_GENERATION = re.compile(r"^journal-(\d{6})$")


class _CommitFuture(Future[int]):
    """A journal record's future: waiting on it leads the group commit when none runs. A
    ``timeout`` bounds only the wait for another thread's commit, not one this thread leads."""

    def __init__(self, journal: LogJournal) -> None:
        super().__init__()
        self._journal = journal

    def result(self, timeout: float | None = None) -> int:
        self._journal.commit_until(self)
        return super().result(timeout)


class Journal(Protocol):
    """Durable, ordered metadata records (see the module docstring)."""

    bytes_total: int
    """Bytes of records in the journal (live and dead: what compaction would shrink)."""
    corrupt_records: int
    """Records that ``replay`` skipped because they failed a check."""

    def submit(self, record: bytes) -> Future[int]:
        """Append ``record`` after every record submitted before; the future gives its offset
        once durable, or the error that stopped it. Raises ``InvalidArgument`` at once
        (nothing written) for a record above ``RECORD_BYTES_MAX``."""
        ...

    def read(self, offset: int) -> bytes:
        """The record at ``offset``; raises ``Corruption`` if it fails its checksum."""
        ...

    def replay(self) -> Iterator[tuple[int, bytes]]:
        """Every readable record in order, skipping (and counting) damaged ones; counts
        ``bytes_total`` and ``corrupt_records`` afresh."""
        ...

    def rewrite(self, records: Iterable[bytes]) -> None:
        """Replace the whole journal with ``records``, atomically (caller: nothing in flight)."""
        ...

    def close(self) -> None: ...


def _check_size(record: bytes) -> None:
    if len(record) > RECORD_BYTES_MAX:
        raise InvalidArgument(f"metadata record of {len(record)} bytes > {RECORD_BYTES_MAX}")


def _done(offset: int) -> Future[int]:
    future: Future[int] = Future()
    future.set_result(offset)
    return future


class MemoryJournal:
    """The journal in memory (no durability); offsets are list positions."""

    def __init__(self) -> None:
        self._records: list[bytes] = []
        self._lock = threading.Lock()
        self.bytes_total = 0
        self.corrupt_records = 0

    def submit(self, record: bytes) -> Future[int]:
        _check_size(record)
        with self._lock:
            self._records.append(record)
            self.bytes_total += len(record)
            return _done(len(self._records) - 1)

    def read(self, offset: int) -> bytes:
        with self._lock:
            return self._records[offset]

    def replay(self) -> Iterator[tuple[int, bytes]]:
        with self._lock:
            records = list(self._records)
        yield from enumerate(records)

    def rewrite(self, records: Iterable[bytes]) -> None:
        fresh = list(records)
        with self._lock:
            self._records = fresh
            self.bytes_total = sum(len(record) for record in fresh)

    def close(self) -> None:
        pass


class LogJournal:
    """The journal on a ``SegmentLog`` under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self.generation = self._read_current()
        for path in self.root.iterdir():  # a crashed compaction's or a replaced journal
            match = _GENERATION.match(path.name)
            if match and int(match.group(1)) != self.generation:
                shutil.rmtree(path, ignore_errors=True)
        self.log = self._open_log(self.generation)
        self.bytes_total = 0
        self.corrupt_records = 0
        self._queue: list[tuple[bytes, Future[int]]] = []
        self._changed = threading.Condition()  # guards _queue and _committing
        self._committing = False  # a leader is appending and fsyncing a batch

    def _read_current(self) -> int:
        try:
            text = (self.root / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return 1
        if not text.isdigit():
            raise Corruption(f"{self.root / 'CURRENT'} does not name a journal generation")
        return int(text)

    def _open_log(self, generation: int) -> SegmentLog:
        return SegmentLog(
            self.root / f"journal-{generation:06d}",
            segment_bytes_max=SEGMENT_BYTES_MAX,
            record_bytes_max=RECORD_BYTES_MAX,
            fsync="batch" if self.fsync else "never",
            batch_delay_ms=0.0,  # fsync at once; appends that arrive meanwhile share the next
        )

    # -- writing ---------------------------------------------------------------------------
    def submit(self, record: bytes) -> Future[int]:
        _check_size(record)
        if not self.fsync:
            offset = self.log.append(record)
            self.bytes_total += len(record)
            return _done(offset)
        future = _CommitFuture(self)
        with self._changed:
            self._queue.append((record, future))
            self.bytes_total += len(record)
        return future

    def commit_until(self, future: Future[int]) -> None:
        """Return once ``future`` is resolved, leading commits while none is running (see
        the module docstring). ``_CommitFuture.result`` calls this."""
        while not future.done():
            with self._changed:
                if self._committing:
                    self._changed.wait()
                    continue
                if future.done():
                    return
                batch, self._queue = self._queue, []
                if not batch:
                    raise AssertionError("a pending journal record was not queued")
                self._committing = True
            try:
                self._commit(batch)
            finally:
                with self._changed:
                    self._committing = False
                    self._changed.notify_all()

    def _commit(self, batch: list[tuple[bytes, Future[int]]]) -> None:
        try:
            offsets = self.log.append_many_synced([record for record, _ in batch])
        except Exception as error:  # every record of the batch is refused with the error
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), offset in zip(batch, offsets, strict=True):
            future.set_result(offset)

    # -- reading ---------------------------------------------------------------------------
    def read(self, offset: int) -> bytes:
        return self.log.read(offset)

    def replay(self) -> Iterator[tuple[int, bytes]]:
        cursor, end = self.log.first_offset, self.log.next_offset
        self.bytes_total = self.corrupt_records = 0
        damaged = sorted(self.log.recovery.damaged)
        while cursor < end:
            try:
                for offset, record in self.log.iter_from(cursor):
                    cursor = offset + 1
                    self.bytes_total += len(record)
                    yield offset, record
            except Corruption:
                skip_to = next((e for s, e in damaged if s <= cursor < e), cursor + 1)
                self.corrupt_records += skip_to - cursor
                _LOGGER.warning("journal %s: skipped damaged [%d, %d)", self.root, cursor, skip_to)
                cursor = skip_to

    # -- compaction ------------------------------------------------------------------------
    def rewrite(self, records: Iterable[bytes]) -> None:
        generation = self.generation + 1
        directory = self.root / f"journal-{generation:06d}"
        shutil.rmtree(directory, ignore_errors=True)
        fresh = SegmentLog(
            directory,
            segment_bytes_max=SEGMENT_BYTES_MAX,
            record_bytes_max=RECORD_BYTES_MAX,
            fsync="never",
        )
        total = 0
        try:
            batch: list[bytes] = []
            for record in records:
                batch.append(record)
                total += len(record)
                if len(batch) >= REWRITE_BATCH_RECORDS:
                    fresh.append_many(batch)
                    batch = []
            fresh.append_many(batch)
            if self.fsync:
                fresh.sync()
        finally:
            fresh.close()
        self._switch_current(generation)
        old = self.log.directory
        self.log.close()
        self.generation = generation
        self.log = self._open_log(generation)
        self.bytes_total = total
        shutil.rmtree(old, ignore_errors=True)

    def _switch_current(self, generation: int) -> None:
        temporary = self.root / "CURRENT.tmp"
        with open(temporary, "w") as handle:
            handle.write(f"{generation}\n")
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        os.replace(temporary, self.root / "CURRENT")
        if self.fsync:
            fsync_directory(self.root)

    def close(self) -> None:
        with self._changed:
            pending = [future for _, future in self._queue]
        for future in pending:  # records nobody waited for yet are committed, not dropped
            with contextlib.suppress(Exception):
                future.result()
        self.log.close()
