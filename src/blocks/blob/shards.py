"""Where shards live: one ``ShardStore`` per node, and the ring that picks the nodes.

Theory of operation. A shard is addressed by ``(chunk_id, index)``. A node keeps its shards
as opaque byte strings; it neither parses nor verifies them (``erasure.parse_shard`` does, on
the reading side, so a node cannot vouch for bytes it has silently rotted).

* ``DirectoryShardStore`` keeps one file per shard under ``root/ab/cd/<chunk>.<index>``. A shard
  is written to a temporary name, flushed (``fsync=True``) and renamed into place, so a crash
  leaves either the whole old shard, the whole new one, or none: never a torn file under the
  real name. The directory is fsynced after the rename so the name itself survives.
* ``MemoryShardStore`` keeps shards in a dict and can be switched off (``down``) or have
  shards corrupted or dropped: the fault injector for tests and simulations.

``placement`` spreads a chunk's ``total`` shards over distinct nodes chosen by the consistent
hash ring: the preference list of the chunk id. With fewer nodes than shards, nodes take
several shards round-robin (a single-node store keeps them all, which still protects against
bit rot of individual files, not against losing the disk).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, runtime_checkable

from blocks.core.errors import InvalidArgument, NotFound, Unavailable
from blocks.core.hashing import HashRing

__all__ = ["DirectoryShardStore", "MemoryShardStore", "ShardStore", "placement"]

_HEX = frozenset("0123456789abcdef")


def _check_chunk_id(chunk_id: str) -> None:
    if len(chunk_id) != 64 or not _HEX.issuperset(chunk_id):
        raise InvalidArgument(f"chunk id must be 64 lowercase hex characters, got {chunk_id!r}")


@runtime_checkable
class ShardStore(Protocol):
    """A node's shard storage. Every method raises ``Unavailable`` when the node is down."""

    name: str

    def put_shard(self, chunk_id: str, index: int, data: bytes) -> None:
        """Store (or overwrite) a shard durably."""
        ...

    def get_shard(self, chunk_id: str, index: int) -> bytes | None:
        """The stored bytes, unverified, or ``None`` if this node has no such shard."""
        ...

    def delete_chunk(self, chunk_id: str) -> None:
        """Drop every shard of ``chunk_id`` this node holds; a missing chunk is no error."""
        ...

    def chunk_ids(self) -> Iterator[str]:
        """Every chunk id this node holds at least one shard of (each once)."""
        ...


class MemoryShardStore:
    """Shards in a dict, with switches for faults. Thread-safe."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.down = False
        self._shards: dict[tuple[str, int], bytes] = {}
        self._lock = threading.Lock()

    def _check_up(self) -> None:
        if self.down:
            raise Unavailable(f"node {self.name} is down")

    def put_shard(self, chunk_id: str, index: int, data: bytes) -> None:
        self._check_up()
        with self._lock:
            self._shards[(chunk_id, index)] = bytes(data)

    def get_shard(self, chunk_id: str, index: int) -> bytes | None:
        self._check_up()
        with self._lock:
            return self._shards.get((chunk_id, index))

    def delete_chunk(self, chunk_id: str) -> None:
        self._check_up()
        with self._lock:
            for key in [key for key in self._shards if key[0] == chunk_id]:
                del self._shards[key]

    def chunk_ids(self) -> Iterator[str]:
        self._check_up()
        with self._lock:
            ids = {chunk_id for chunk_id, _ in self._shards}
        return iter(sorted(ids))

    # Fault injection for tests and simulations.
    def shard_keys(self) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(self._shards)

    def corrupt(self, chunk_id: str, index: int, position: int = -1) -> None:
        """Flip one byte of a stored shard (bit rot)."""
        with self._lock:
            data = bytearray(self._shards[(chunk_id, index)])
            data[position % len(data)] ^= 0xFF
            self._shards[(chunk_id, index)] = bytes(data)

    def drop(self, chunk_id: str, index: int) -> None:
        """Lose one shard."""
        with self._lock:
            self._shards.pop((chunk_id, index), None)


class DirectoryShardStore:
    """One file per shard under ``root``; atomic writes by rename, fsync optional."""

    def __init__(self, root: str | Path, *, name: str | None = None, fsync: bool = True) -> None:
        self.root = Path(root)
        self.name = name or self.root.name
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._counter = 0
        self._lock = threading.Lock()

    def _directory(self, chunk_id: str) -> Path:
        _check_chunk_id(chunk_id)
        return self.root / chunk_id[:2] / chunk_id[2:4]

    def path_of(self, chunk_id: str, index: int) -> Path:
        """The file holding a shard (for tests that damage disks on purpose)."""
        return self._directory(chunk_id) / f"{chunk_id}.{index}"

    def put_shard(self, chunk_id: str, index: int, data: bytes) -> None:
        self.put_shards(chunk_id, {index: data})

    def put_shards(self, chunk_id: str, shards: Mapping[int, bytes]) -> None:
        """Store several shards of one chunk: write every temporary file, flush them all
        concurrently (the file system can share one journal commit among them), rename each
        into place and flush the shared directory once."""
        directory = self._directory(chunk_id)
        directory.mkdir(parents=True, exist_ok=True)
        written: list[tuple[Path, Path]] = []
        try:
            for index, data in shards.items():
                with self._lock:
                    self._counter += 1
                    name = f".tmp-{os.getpid()}-{threading.get_ident()}-{self._counter}"
                temporary = directory / name
                written.append((temporary, directory / f"{chunk_id}.{index}"))
                with open(temporary, "wb") as handle:
                    handle.write(data)
            if self.fsync:
                list(_FLUSHERS.map(_fsync_path, [temporary for temporary, _ in written]))
            for temporary, final in written:
                os.replace(temporary, final)
        except BaseException:
            for temporary, _ in written:
                temporary.unlink(missing_ok=True)
            raise
        if self.fsync:
            _fsync_directory(directory)

    def get_shard(self, chunk_id: str, index: int) -> bytes | None:
        try:
            return self.path_of(chunk_id, index).read_bytes()
        except FileNotFoundError:
            return None

    def delete_chunk(self, chunk_id: str) -> None:
        directory = self._directory(chunk_id)
        if not directory.is_dir():
            return
        for path in directory.glob(f"{chunk_id}.*"):
            path.unlink(missing_ok=True)

    def chunk_ids(self) -> Iterator[str]:
        seen: set[str] = set()
        for path in sorted(self.root.glob("??/??/*.*")):
            chunk_id, _, index = path.name.partition(".")
            if path.name.startswith(".tmp-"):
                continue
            if len(chunk_id) == 64 and index.isdigit() and chunk_id not in seen:
                seen.add(chunk_id)
                yield chunk_id

    def remove_temporaries(self) -> int:
        """Delete the temporary files a crash mid-write left behind; call before serving."""
        removed = 0
        for path in self.root.glob("??/??/.tmp-*"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed


_FLUSHERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="blob-fsync")


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def placement(chunk_id: str, ring: HashRing, total: int) -> list[str]:
    """The node for each shard index ``0..total-1`` of ``chunk_id``: distinct nodes from the
    ring's preference list, reused round-robin when there are fewer nodes than shards."""
    if len(ring) == 0:
        raise NotFound("no nodes to place shards on")
    nodes = ring.preference_list(chunk_id, min(total, len(ring)))
    return [nodes[index % len(nodes)] for index in range(total)]
