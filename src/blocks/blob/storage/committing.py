"""Committing metadata changes through the journal: ordering, durability, compaction.

Theory of operation. Every change (a bucket, an object, an upload, a part, a delete) becomes
one journal record. The store submits it *under its lock* (``_submit``), which fixes its
place in the journal and gives it a sequence number that becomes the latest for the entity
it changes (a key, a part number); it then waits for durability *outside* the lock, so
concurrent commits share fsyncs instead of queueing behind each other; finally, under the
lock again, ``_finish`` says whether the change is still the latest for its entity. Only
then does the caller apply it to the index: a change that a later one overtook (two PUTs of
one key, a PUT and a DELETE) is dropped in memory exactly as replay drops it, because replay
is last-writer-wins in journal order, and journal order is submission order. Readers never
see a change before it is durable.

If the journal itself fails (an fsync error), the change may or may not be on disk: the
caller keeps its chunk references (leaked until the next open, which recounts them from the
journal) rather than risk deleting chunks a surviving record names.

Compaction runs when the journal holds more than ``COMPACT_RATIO`` times the bytes the live
state needs (and at least ``compact_bytes_min``): under the lock, with no change in flight,
the index is written into a fresh journal and replayed back. Submissions do not wait for it
until the journal passes twice that bound; then they wait for the changes in flight to drain
so compaction can run: the journal's size stays bounded under any load.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable
from concurrent.futures import Future
from typing import TypeVar

from blocks.blob.storage.index import MetaIndex
from blocks.blob.storage.journal import Journal
from blocks.blob.storage.records import Record, decode, encode, inline_body
from blocks.blob.storage.store_parts import StoreParts
from blocks.core.errors import Corruption, FailedPrecondition

__all__ = ["COMPACTION_SLACK_BYTES", "COMPACT_RATIO", "CommitMixin"]

COMPACT_RATIO = 2
COMPACTION_SLACK_BYTES = 256 * 1024
"""Margin of ``compaction_near`` over one change's body: its metadata, stored headers and
whatever other changes commit before it."""
CLOSE_TIMEOUT_S = 30.0
RecordT = TypeVar("RecordT", bound=Record)


class CommitMixin(StoreParts):
    """The journal half of ``LocalBlobStore``."""

    _closed: bool
    journal: Journal
    compact_bytes_min: int
    corrupt_records: int
    compactions: int
    orphan_grace_s: float
    tombstones_max = 0
    """Deleted keys the index remembers (a cluster's replica keeps some; see ``index``)."""

    def _init_commits(self) -> None:
        self._quiet = threading.Condition(self._lock)
        self._order = itertools.count(1)
        self._latest: dict[Hashable, int] = {}
        """Per entity with a change in flight: the sequence number of its latest change."""
        self._in_flight = 0
        self.corrupt_records = 0
        self.compactions = 0

    def _replay(self) -> MetaIndex:
        index = MetaIndex(tombstones_max=self.tombstones_max)
        for offset, data in self.journal.replay():
            try:
                record = decode(data, offset)
            except Corruption:
                self.corrupt_records += 1
                continue
            index.apply(record)
        return index

    def _load(self) -> None:
        self.index = self._replay()
        self.corrupt_records += self.journal.corrupt_records
        for chunks in self.index.chunk_lists():
            self.ledger.adopt(chunks)
        self.ledger.collect_orphans(self._orphan_cutoff_ms())

    def _orphan_cutoff_ms(self) -> int:
        """Unreferenced chunks written before this instant may be collected."""
        return self.clock.now_ms() - int(self.orphan_grace_s * 1000)

    def _read_inline(self, offset: int) -> memoryview:
        """An inline object's bytes (lock held: compaction moves records)."""
        return inline_body(self.journal.read(offset))

    def _forget_inline(self) -> None:
        """Forget inline objects' bytes kept by offset: compaction moves the records."""

    def _busy(self, entity: Hashable) -> bool:
        return entity in self._latest

    def _submit(self, entity: Hashable, record: Record) -> tuple[int, Future[int], int]:
        """Queue ``record`` as the latest change of ``entity`` (lock held); returns its
        sequence number, the future of its offset and its size in bytes. What is journaled
        is ``_ordered(entity, record)``: a caller that needs that record (a replica may
        restamp a change of a key) uses ``_submit_ordered``."""
        _, sequence, future, size = self._submit_ordered(entity, record)
        return sequence, future, size

    def _submit_ordered(
        self, entity: Hashable, record: RecordT
    ) -> tuple[RecordT, int, Future[int], int]:
        """As ``_submit``, returning first the record journaled. The wait for compaction
        (journal past twice its bound) releases the lock, so ``_ordered`` runs after it:
        nothing can come between its decision and the queueing."""
        self._await_room()
        if self._closed:
            raise FailedPrecondition("the blob store is closed")
        record = self._ordered(entity, record)
        data = encode(record)
        future = self.journal.submit(data)
        sequence = next(self._order)
        self._latest[entity] = sequence
        self._in_flight += 1
        return record, sequence, future, len(data)

    def _await_room(self) -> None:
        """If the journal is past twice its bound, wait (releasing the lock, at most
        ``CLOSE_TIMEOUT_S``) for the changes in flight to drain, and compact. Lock held. A
        caller that checks state before submitting (a write's condition) calls it first,
        so that the submission does not wait after the check."""
        if self.journal.bytes_total > 2 * self._compaction_bound():
            self._quiet.wait_for(lambda: self._in_flight == 0 or self._closed, CLOSE_TIMEOUT_S)
            self._maybe_compact()

    def _ordered(self, entity: Hashable, record: RecordT) -> RecordT:
        """The record to journal for ``record`` (lock held, just before it is queued as
        ``entity``'s latest change): on one node ``record`` itself, since journal order is
        the order of a key's changes; a cluster's replica moves a local change of a key
        past the newest version it holds (``replica``)."""
        return record

    def _finish(self, entity: Hashable, sequence: int) -> bool:
        """The change is durable or failed (lock held): True if it is still its entity's
        latest change, which the caller then applies to the index."""
        self._in_flight -= 1
        current = self._latest.get(entity) == sequence
        if current:
            del self._latest[entity]
        if not self._in_flight:
            self._quiet.notify_all()
        return current

    def _compaction_bound(self) -> int:
        return max(self.compact_bytes_min, COMPACT_RATIO * self.index.live_bytes())

    def compaction_near(self, record_bytes: int) -> bool:
        """Whether a change of about ``record_bytes`` (plus ``COMPACTION_SLACK_BYTES`` for
        its metadata and for changes that land first) could make the journal due for
        compaction. Read without the lock, so only a hint: a caller that must not stall
        (the S3 server's event loop) sends such a change to a worker thread, where a
        compaction it triggers may take as long as rewriting the live state."""
        total = self.journal.bytes_total + record_bytes + COMPACTION_SLACK_BYTES
        return total > self._compaction_bound()

    def _durable(self, entity: Hashable, sequence: int, future: Future[int]) -> int:
        """Wait (without the lock) for a record ``_submit`` returned to be durable; its
        journal offset. If the journal failed, the change is finished (its entity no longer
        busy) and the error raised."""
        try:
            return future.result()
        except BaseException:
            with self._lock:
                self._finish(entity, sequence)
            raise

    def _maybe_compact(self) -> bool:
        """Rewrite the journal if it is due and nothing is in flight (lock held)."""
        if self._in_flight or self._closed:
            return False
        if self.journal.bytes_total <= self._compaction_bound():
            return False
        records = (encode(r) for r in self.index.snapshot(self._read_inline))
        self._forget_inline()
        self.journal.rewrite(records)
        self.index = self._replay()  # offsets of inline objects moved
        self.compactions += 1
        return True

    def _close_commits(self) -> None:
        """Refuse new changes, let those in flight finish, close the journal."""
        with self._lock:
            self._closed = True
            self._quiet.wait_for(lambda: self._in_flight == 0, CLOSE_TIMEOUT_S)
            self.journal.close()
