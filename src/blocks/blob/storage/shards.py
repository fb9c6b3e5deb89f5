"""Where shards live: one ``ShardStore`` per node, and the ring that picks the nodes.

Theory of operation. A shard is addressed by ``(chunk_id, index)``. A node keeps its shards
as opaque byte strings; it neither parses nor verifies them (``erasure.parse_shard`` does, on
the reading side, so a node cannot vouch for bytes it has silently rotted).

* ``DirectoryShardStore`` keeps one file per shard under ``root/ab/cd/<chunk>.<index>``.
  Replacing a shard (``put_shard``, read repair) writes a temporary name, flushes it and
  renames it into place, so a crash leaves either the whole old shard or the whole new one.
  A *fresh* chunk's shards (``write_shards``, used for chunks nobody references yet) are
  written under their final names with one gathering write each and flushed in the
  background (``durable.Flush``): until a manifest that waited for that flush commits, the
  files belong to no object, and a crash that tears one leaves an orphan that fails its
  checksum and is collected at the next open. Directories created on the way are flushed
  into their parents too, so a shard's name survives a crash as well as its bytes.
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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from blocks.blob.storage.durable import Flush, flush_descriptors
from blocks.core.errors import InvalidArgument, NotFound, Unavailable
from blocks.core.files import fsync_directory
from blocks.core.hashing import HashRing

__all__ = ["DirectoryShardStore", "MemoryShardStore", "ShardStore", "placement"]

_HEX = frozenset("0123456789abcdef")
_READY_DIRECTORIES_MAX = 65536 + 256  # every ab/cd pair and every ab: bounded by the layout


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
        self._ready: set[Path] = set()

    def _directory(self, chunk_id: str) -> Path:
        _check_chunk_id(chunk_id)
        return self.root / chunk_id[:2] / chunk_id[2:4]

    def path_of(self, chunk_id: str, index: int) -> Path:
        """The file holding a shard (for tests that damage disks on purpose)."""
        return self._directory(chunk_id) / f"{chunk_id}.{index}"

    def put_shard(self, chunk_id: str, index: int, data: bytes) -> None:
        self.put_shards(chunk_id, {index: data})

    def _prepare(self, chunk_id: str) -> tuple[Path, list[Path]]:
        """The chunk's directory, created if needed, and the parents whose entries changed
        (to flush when ``fsync`` is on). Known directories cost nothing after the first use."""
        directory = self._directory(chunk_id)
        if directory in self._ready:
            return directory, []
        parents = []
        for path in (directory.parent, directory):
            try:
                path.mkdir()
                parents.append(path.parent)
            except FileExistsError:
                pass
        if len(self._ready) < _READY_DIRECTORIES_MAX:
            self._ready.add(directory)
        # A directory another thread just created may not be durable yet: flush its parent
        # too when we cannot tell (the first use in this process).
        return directory, (parents or [directory.parent]) if self.fsync else []

    def put_shards(self, chunk_id: str, shards: Mapping[int, bytes]) -> None:
        """Store several shards of one chunk, replacing any there: write every temporary
        file, flush them all concurrently (the file system can share one journal commit
        among them), rename each into place and flush the shared directory once."""
        directory, parents = self._prepare(chunk_id)
        written: list[tuple[Path, Path]] = []
        descriptors: list[int] = []
        try:
            for index, data in shards.items():
                with self._lock:
                    self._counter += 1
                    name = f".tmp-{os.getpid()}-{threading.get_ident()}-{self._counter}"
                temporary = directory / name
                written.append((temporary, directory / f"{chunk_id}.{index}"))
                descriptors.append(_create(temporary))
                _write_all(descriptors[-1], (data,))
            if self.fsync:
                pending, descriptors = descriptors, []
                flush_descriptors(pending, parents).wait()
            for temporary, final in written:
                os.replace(temporary, final)
        except BaseException:
            for temporary, _ in written:
                temporary.unlink(missing_ok=True)
            raise
        finally:
            for descriptor in descriptors:
                os.close(descriptor)
        if self.fsync:
            fsync_directory(directory)

    def write_shards(self, chunk_id: str, shards: Mapping[int, Sequence[bytes]]) -> Flush:
        """Write a fresh chunk's shards (each given as pieces, written without joining them)
        under their final names and return the ``Flush`` that makes them durable. Only for
        chunks nobody references (see the module docstring); the caller waits on the flush
        before committing anything that points at them."""
        directory, parents = self._prepare(chunk_id)
        descriptors: list[int] = []
        try:
            for index, pieces in shards.items():
                descriptors.append(_create(directory / f"{chunk_id}.{index}"))
                _write_all(descriptors[-1], pieces)
        except BaseException:
            for descriptor in descriptors:
                os.close(descriptor)
            raise
        if not self.fsync:
            for descriptor in descriptors:
                os.close(descriptor)
            return Flush()
        return flush_descriptors(descriptors, [directory, *parents])

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

    def chunk_ids_modified_before(self, cutoff_ms: int) -> Iterator[str]:
        """Every chunk id all of whose shard files here were last written before
        ``cutoff_ms`` (wall clock): the candidates an orphan collection with a grace period
        may consider. A chunk with any younger file is left out."""
        young: set[str] = set()
        old: set[str] = set()
        for path in self.root.glob("??/??/*.*"):
            chunk_id, _, index = path.name.partition(".")
            if path.name.startswith(".tmp-") or len(chunk_id) != 64 or not index.isdigit():
                continue
            try:
                modified_ms = path.stat().st_mtime_ns // 1_000_000
            except FileNotFoundError:
                continue
            (old if modified_ms < cutoff_ms else young).add(chunk_id)
        return iter(sorted(old - young))

    def remove_temporaries(self) -> int:
        """Delete the temporary files a crash mid-write left behind; call before serving."""
        removed = 0
        for path in self.root.glob("??/??/.tmp-*"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)


def _write_all(descriptor: int, pieces: Sequence[bytes]) -> None:
    """Write every piece, in order, with as few system calls as the kernel allows."""
    pending = [memoryview(piece) for piece in pieces if len(piece)]
    while pending:
        written = os.writev(descriptor, pending)
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if pending and written:
            pending[0] = pending[0][written:]


def placement(chunk_id: str, ring: HashRing, total: int) -> list[str]:
    """The node for each shard index ``0..total-1`` of ``chunk_id``: distinct nodes from the
    ring's preference list, reused round-robin when there are fewer nodes than shards."""
    if len(ring) == 0:
        raise NotFound("no nodes to place shards on")
    nodes = ring.preference_list(chunk_id, min(total, len(ring)))
    return [nodes[index % len(nodes)] for index in range(total)]
