"""Crashes: a killed upload leaves no half-visible object; a restart finds every completed one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from blocks.blob import LocalBlobStore
from blocks.blob.store import ORPHAN_GRACE_S
from blocks.core.clock import ManualClock, SystemClock
from blocks.core.errors import NotFound

_WRITER = textwrap.dedent(
    """
    import sys, time
    from blocks.blob import LocalBlobStore

    store = LocalBlobStore(sys.argv[1], chunk_bytes=4096)
    store.create_bucket("bkt")
    for n in range(5):
        store.put_object("bkt", f"done-{n}", bytes([n]) * (10_000 + n))
        print(f"committed {n}", flush=True)

    def slow_pieces():
        for n in range(1000):
            yield bytes([7]) * 4096
            if n == 40:  # past the inline size: chunks are being written as shards
                print("uploading", flush=True)
            time.sleep(0.01)

    store.put_object("bkt", "half", slow_pieces())
    print("finished half", flush=True)
    """
)


@pytest.mark.process
def test_kill_during_upload_leaves_only_completed_objects(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = child.stdout.readline().strip()
            lines.append(line)
            if line == "uploading" or not line:
                break
        assert lines[-1] == "uploading", lines
        while not list((tmp_path / "shards").rglob("*.*")) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling until the first shard file is on disk
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    # Opened at once, the killed upload's chunks are younger than the grace period: kept.
    young = LocalBlobStore(tmp_path, chunk_bytes=4096)
    assert young.chunks.stored_chunk_ids() > set(young.ledger.referenced())
    young.close()
    # Past the grace period the next open collects them.
    later = ManualClock(SystemClock().now_ms() + int(ORPHAN_GRACE_S * 1000) + 60_000)
    store = LocalBlobStore(tmp_path, chunk_bytes=4096, clock=later)
    for n in range(5):
        assert store.get_object("bkt", f"done-{n}")[1] == bytes([n]) * (10_000 + n)
    with pytest.raises(NotFound):
        store.head_object("bkt", "half")
    assert [o.key for o in store.list_objects("bkt").objects] == [f"done-{n}" for n in range(5)]
    # The chunks the killed upload had written were collected at that open.
    assert store.chunks.stored_chunk_ids() == set(store.ledger.referenced())
    assert bytes([7]) * 4096 not in {store.chunks.read(c) for c in store.ledger.referenced()}


def test_failed_upload_changes_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, chunk_bytes=100, fsync=False)
    store.create_bucket("bkt")
    store.put_object("bkt", "k", b"old" * 100)

    def failing() -> object:
        yield b"new" * 100
        raise OSError("client went away")

    with pytest.raises(OSError):
        store.put_object("bkt", "k", failing())  # type: ignore[arg-type]
    assert store.get_object("bkt", "k")[1] == b"old" * 100
    assert store.ledger.wait_for_deletes()
    assert store.chunks.stored_chunk_ids() == set(store.ledger.referenced())


def test_directory_shards_survive_file_rot_and_loss(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, chunk_bytes=1000, inline_bytes_max=0, fsync=False)
    store.create_bucket("bkt")
    data = os.urandom(2500)
    store.put_object("bkt", "k", data)
    shard_root = tmp_path / "shards" / "local"
    for chunk_id in store.ledger.referenced():
        (shard_root / chunk_id[:2] / chunk_id[2:4] / f"{chunk_id}.0").unlink()
        path = shard_root / chunk_id[:2] / chunk_id[2:4] / f"{chunk_id}.5"
        path.write_bytes(path.read_bytes()[:-10])
    assert store.get_object("bkt", "k")[1] == data
    assert store.scrub().shards_repaired == 3  # the parity shards reads do not touch
    assert store.scrub().shards_repaired == 0
