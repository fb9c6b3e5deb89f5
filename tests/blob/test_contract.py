"""The public blob contract, run against the in-memory and the on-disk store."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter

from hypothesis import settings

from blocks.blob import BlobStore, LocalBlobStore, ReplicationCodec
from blocks.blob.contract import BlobStoreContract

CHUNK_BYTES = 128
PART_MIN = 200
INLINE_MAX = 300
"""Objects up to this size are inline: the contract's data exercises both kinds."""


def _check_ledger(store: BlobStore) -> None:
    """Reference counts equal an independent recount, and no chunk is stored unreferenced."""
    assert isinstance(store, LocalBlobStore)
    expected: Counter[str] = Counter()
    for chunks in store.index.chunk_lists():
        expected.update(ref.chunk_id for ref in chunks)
    actual = {chunk_id: store.ledger.count(chunk_id) for chunk_id in store.ledger.referenced()}
    assert actual == dict(expected)
    assert store.ledger.wait_for_deletes(), "background chunk removal did not finish"
    assert store.chunks.stored_chunk_ids() == set(expected)


class MemoryContract(BlobStoreContract):
    part_bytes_min = PART_MIN

    def make_subject(self) -> BlobStore:
        return LocalBlobStore(
            chunk_bytes=CHUNK_BYTES,
            part_bytes_min=PART_MIN,
            inline_bytes_max=INLINE_MAX,
            compact_bytes_min=4096,
        )

    def check_storage(self, store: BlobStore) -> None:
        _check_ledger(store)


class ReplicatedContract(MemoryContract):
    def make_subject(self) -> BlobStore:
        return LocalBlobStore(
            codec=ReplicationCodec(2),
            chunk_bytes=CHUNK_BYTES,
            part_bytes_min=PART_MIN,
            inline_bytes_max=0,
        )


class DirectoryContract(BlobStoreContract):
    part_bytes_min = PART_MIN
    supports_restart = True
    fsync = False

    def make_subject(self) -> BlobStore:
        self.directory = tempfile.mkdtemp(prefix="blob-contract-")
        return self._open()

    def _open(self) -> BlobStore:
        return LocalBlobStore(
            self.directory,
            chunk_bytes=CHUNK_BYTES,
            part_bytes_min=PART_MIN,
            inline_bytes_max=INLINE_MAX,
            compact_bytes_min=4096,  # small: compaction happens within a run
            fsync=self.fsync,
        )

    def restart_subject(self, store: BlobStore) -> BlobStore:
        store.close()
        return self._open()

    def check_storage(self, store: BlobStore) -> None:
        _check_ledger(store)

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(self.directory, ignore_errors=True)


class DurableDirectoryContract(DirectoryContract):
    """fsync on: commits go through the journal's group commit thread."""

    fsync = True


MemoryContract.TestCase.settings = settings(stateful_step_count=30, deadline=None)
ReplicatedContract.TestCase.settings = settings(
    max_examples=15, stateful_step_count=20, deadline=None
)
DirectoryContract.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)

DurableDirectoryContract.TestCase.settings = settings(
    max_examples=8, stateful_step_count=20, deadline=None
)

TestMemoryContract = MemoryContract.TestCase
TestReplicatedContract = ReplicatedContract.TestCase
TestDirectoryContract = DirectoryContract.TestCase
TestDurableDirectoryContract = DurableDirectoryContract.TestCase
