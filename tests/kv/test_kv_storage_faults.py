"""Disk faults in kv: the Bitcask engine and a node whose store refuses to save.

A refused save never hangs a request: the writer gets ``StorageError`` (``StorageFull`` for a
full disk), reads of saved keys go on, memory goes back to what the store holds, writes
resume when the store takes them, and what was acknowledged survives a restart.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import (
    Overloaded,
    StorageError,
    StorageFull,
    Unavailable,
    grpc_status_of,
    storage_error,
)
from blocks.kv.cluster.node import KVNodeCore, PutReplica, QuorumConfig
from blocks.kv.cluster.persist import ObjectStore, StoredRecord
from blocks.kv.cluster.versions import VersionedObject, VersionVector, update
from blocks.kv.engine import bitcask as bitcask_module
from blocks.kv.engine.bitcask import Bitcask
from blocks.kv.local_cluster import LocalCluster

EIO = storage_error(OSError(errno.EIO, os.strerror(errno.EIO)), "write")
ENOSPC = storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "write")


def test_storage_errors_are_typed_and_map_to_grpc() -> None:
    assert isinstance(ENOSPC, StorageFull) and isinstance(ENOSPC, Overloaded)
    assert type(EIO) is StorageError and isinstance(EIO, Unavailable)
    assert "storage full" in str(ENOSPC) and "Input/output error" in str(EIO)
    assert grpc_status_of(ENOSPC)[0] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_status_of(EIO)[0] is grpc.StatusCode.UNAVAILABLE


# --- the engine ------------------------------------------------------------------------------


def _fail_with(code: int) -> object:
    def fail(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


def test_bitcask_full_disk_refuses_the_write_and_takes_writes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Bitcask.open(tmp_path, sync="always") as store:
        store.put(b"a", b"1")
        with monkeypatch.context() as patch:
            patch.setattr(bitcask_module, "pwrite_all", _fail_with(errno.ENOSPC))
            with pytest.raises(StorageFull):
                store.put(b"a", b"2")
            with pytest.raises(StorageFull):
                store.delete(b"a")
            assert store.get(b"a") == b"1"  # reads go on
        store.put(b"b", b"3")  # space returned
    with Bitcask.open(tmp_path) as reopened:
        assert (reopened.get(b"a"), reopened.get(b"b")) == (b"1", b"3")


def test_bitcask_failed_fsync_refuses_all_writes_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Bitcask.open(tmp_path, sync="always") as store:
        store.put(b"a", b"1")
        with monkeypatch.context() as patch:
            patch.setattr(os, "fdatasync", _fail_with(errno.EIO))
            with pytest.raises(StorageError) as raised:
                store.put(b"a", b"2")
            assert not isinstance(raised.value, StorageFull)
        with pytest.raises(StorageError, match="fsync failed"):
            store.put(b"c", b"3")  # the page cache cannot be trusted any more
    with Bitcask.open(tmp_path) as reopened:
        assert reopened.get(b"a") in (b"1", b"2")  # the unsynced write may or may not be there
        assert reopened.get(b"c") is None
        reopened.put(b"c", b"3")


# --- a node whose store refuses --------------------------------------------------------------


class RefusingStore:
    """An ``ObjectStore`` that raises ``refusal`` from ``save`` while it is set."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.refusal: StorageError | None = None

    def load(self) -> Iterator[tuple[bytes, VersionedObject, list[str]]]:
        return self.inner.load()

    def save(self, records: Iterable[StoredRecord]) -> None:
        if self.refusal is not None:
            raise self.refusal
        self.inner.save(records)

    def counter_mark(self) -> int:
        return self.inner.counter_mark()

    def reserve_counters(self, mark: int) -> None:
        if self.refusal is not None:
            raise self.refusal
        self.inner.reserve_counters(mark)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("refusal", [EIO, ENOSPC], ids=["eio", "enospc"])
def test_a_refused_save_fails_the_write_and_nothing_else(refusal: StorageError) -> None:
    asyncio.run(_refused_save(refusal))


async def _refused_save(refusal: StorageError) -> None:
    async with LocalCluster(nodes=1, replicas=1, read_quorum=1, write_quorum=1) as cluster:
        node = cluster.node("n1")
        store = RefusingStore(node.store)
        node.store = store
        client = cluster.client(timeout_s=5.0)
        await client.put(b"saved", b"v1")
        store.refusal = refusal
        for key, value in [(b"saved", b"v2"), (b"new", b"x")]:
            with pytest.raises(StorageError) as raised:
                await client.put(key, value)
            assert type(raised.value) is type(refusal), raised.value
        assert (await client.get(b"saved")).value == b"v1"  # rolled back, reads go on
        assert (await client.get(b"new")).value is None
        assert node.status()["storage"] == ("full" if refusal is ENOSPC else "failed")
        assert node.counters["storage_errors"] >= 2
        store.refusal = None
        await client.put(b"new", b"y")  # writes resume
        assert node.status()["storage"] == "ok"
        await cluster.crash("n1")
        await cluster.restart("n1")
        assert (await client.get(b"saved")).value == b"v1"
        assert (await client.get(b"new")).value == b"y"


def test_a_cluster_keeps_writing_when_one_replica_disk_fails() -> None:
    asyncio.run(_one_replica_fails())


async def _one_replica_fails() -> None:
    async with LocalCluster(nodes=3, replicas=3, read_quorum=2, write_quorum=2) as cluster:
        broken = cluster.node("n1")
        store = RefusingStore(broken.store)
        broken.store = store
        store.refusal = EIO
        client = cluster.client(timeout_s=5.0)
        for index in range(10):  # n1 coordinates some: the client then tries the next node
            key = f"k{index}".encode()
            await client.put(key, b"v")
            assert (await client.get(key)).value == b"v"
        assert broken.status()["storage"] == "failed"
        assert all(key not in broken.core.objects for key in (b"k0", b"k5"))


# --- the core's side of a refused save ---------------------------------------------------------


def test_the_core_reverts_objects_and_hints_to_the_last_save() -> None:
    core = KVNodeCore("n1", QuorumConfig(replicas=2), lambda key: ["n1", "n2", "n3"], ManualClock())
    saved = update(None, VersionVector(), "n2", b"saved", core.hlc.now())
    core.handle("n2", PutReplica(1, b"k", saved, None))
    core.saved()  # the store now holds b"saved" for k, no hints
    newer = update(saved, saved.context, "n2", b"newer", core.hlc.now())
    core.handle("n3", PutReplica(2, b"k", newer, "n2"))  # with a hint for n2
    core.handle("n3", PutReplica(3, b"fresh", newer, "n2"))
    assert core.hints.owners(b"k") == {"n2"} and core.dirty == {b"k", b"fresh"}
    assert core.revert_unsaved() == {b"k", b"fresh"}
    assert core.objects == {b"k": saved} and len(core.hints) == 0 and not core.dirty
