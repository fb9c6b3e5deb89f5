"""Durable metadata: buckets, object manifests and multipart uploads, one file each.

Theory of operation. Every metadata record is a small file written whole to a temporary name,
fsynced, renamed over its final name and the directory fsynced: the rename is the commit
point, so a record is either entirely the old one, entirely the new one, or absent. Each file
starts with an xxh3-64 checksum of the msgpack body that follows; a file that fails it is
reported and skipped at load, never trusted.

Layout under ``root``::

    buckets/<bucket>                        created_ms
    objects/<bucket>/<xxh3-128 of key>      manifest (the key is inside; names stay short)
    uploads/<upload id>/upload              bucket, key, content type, user metadata
    uploads/<upload id>/part-<number>       part manifest

A write can be split in two so that its fsync overlaps other work: ``stage_*`` writes the
temporary file and starts flushing it in the background, ``publish`` waits for that flush and
renames; ``sync_directory`` then makes the rename durable, shared among concurrent callers
(``durable.GroupSync``: concurrent small PUTs into one bucket pay one directory fsync).

Everything is loaded into memory at open (the store serves reads and listings from there);
the files are the durable copy. The in-memory side is plain dicts owned by the caller, which
holds its own lock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from blocks.blob.durable import Flush, GroupSync, flush_descriptors
from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError

__all__ = ["ChunkRef", "Manifest", "MetadataFiles", "PartRecord", "StagedWrite", "UploadRecord"]

_CHECKSUM = struct.Struct("<Q")
_RECORD_BYTES_MAX = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of an object: its content id and size in bytes."""

    chunk_id: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """An object: its chunks in order plus what HEAD returns."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    modified_ms: int
    chunks: tuple[ChunkRef, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    parts_count: int = 0


@dataclass(frozen=True, slots=True)
class UploadRecord:
    upload_id: str
    bucket: str
    key: str
    content_type: str
    created_ms: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartRecord:
    upload_id: str
    number: int
    etag: str
    size: int
    md5: bytes
    chunks: tuple[ChunkRef, ...]


def _chunks_to_wire(chunks: tuple[ChunkRef, ...]) -> list[list[Any]]:
    return [[chunk.chunk_id, chunk.size] for chunk in chunks]


def _chunks_from_wire(value: Any) -> tuple[ChunkRef, ...]:
    return tuple(ChunkRef(str(chunk_id), int(size)) for chunk_id, size in value)


def _part(part: PartRecord) -> dict[str, Any]:
    return {
        "n": part.number,
        "e": part.etag,
        "s": part.size,
        "d": part.md5,
        "c": _chunks_to_wire(part.chunks),
    }


def manifest_to_wire(manifest: Manifest) -> dict[str, Any]:
    return {
        "b": manifest.bucket,
        "k": manifest.key,
        "s": manifest.size,
        "e": manifest.etag,
        "t": manifest.content_type,
        "m": manifest.modified_ms,
        "c": _chunks_to_wire(manifest.chunks),
        "u": manifest.metadata,
        "p": manifest.parts_count,
    }


def manifest_from_wire(value: Any) -> Manifest:
    return Manifest(
        bucket=str(value["b"]),
        key=str(value["k"]),
        size=int(value["s"]),
        etag=str(value["e"]),
        content_type=str(value["t"]),
        modified_ms=int(value["m"]),
        chunks=_chunks_from_wire(value["c"]),
        metadata={str(k): str(v) for k, v in value["u"].items()},
        parts_count=int(value["p"]),
    )


@dataclass(frozen=True, slots=True)
class StagedWrite:
    """A record written to ``temporary`` and being flushed; ``publish`` renames it to
    ``final``."""

    temporary: Path
    final: Path
    flush: Flush


class MetadataFiles:
    """Reads and atomically writes the metadata files under ``root``."""

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.corrupt_files: list[Path] = []
        for sub in ("buckets", "objects", "uploads"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._counter = 0
        self._lock = threading.Lock()
        self._directories = GroupSync()

    # -- paths -------------------------------------------------------------------------------
    def _object_path(self, bucket: str, key: str) -> Path:
        name = xxhash.xxh3_128_hexdigest(key.encode("utf-8"))
        return self.root / "objects" / bucket / name

    def object_directory(self, bucket: str) -> Path:
        """Where the bucket's manifests live (the directory a manifest rename changes)."""
        return self.root / "objects" / bucket

    def _upload_dir(self, upload_id: str) -> Path:
        return self.root / "uploads" / upload_id

    # -- writes ------------------------------------------------------------------------------
    def _write(self, path: Path, value: Any) -> None:
        self.publish(self._stage(path, value))
        self.sync_directory(path.parent)

    def _stage(self, path: Path, value: Any) -> StagedWrite:
        body = pack(value, size_max=_RECORD_BYTES_MAX)
        data = _CHECKSUM.pack(xxhash.xxh3_64_intdigest(body)) + body
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._counter += 1
            temporary = path.parent / f".tmp-{os.getpid()}-{self._counter}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
        except BaseException:
            os.close(descriptor)
            temporary.unlink(missing_ok=True)
            raise
        if not self.fsync:
            os.close(descriptor)
            return StagedWrite(temporary, path, Flush())
        return StagedWrite(temporary, path, flush_descriptors([descriptor]))

    def publish(self, staged: StagedWrite) -> None:
        """Wait until the staged record is on disk, then rename it into place (the caller
        then calls ``sync_directory`` on its directory for the name to be durable too)."""
        try:
            staged.flush.wait()
            os.replace(staged.temporary, staged.final)
        except BaseException:
            staged.temporary.unlink(missing_ok=True)
            raise

    def discard(self, staged: StagedWrite) -> None:
        """Drop a staged record that will not be published."""
        with contextlib.suppress(OSError):
            staged.flush.wait()
        staged.temporary.unlink(missing_ok=True)

    def sync_directory(self, directory: Path) -> None:
        """Make the renames and removals done in ``directory`` durable (group commit)."""
        if self.fsync:
            self._directories.sync(directory)

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.sync_directory(path.parent)

    def put_bucket(self, name: str, created_ms: int) -> None:
        (self.root / "objects" / name).mkdir(parents=True, exist_ok=True)
        self._write(self.root / "buckets" / name, {"created_ms": created_ms})

    def delete_bucket(self, name: str) -> None:
        self._remove(self.root / "buckets" / name)
        shutil.rmtree(self.root / "objects" / name, ignore_errors=True)

    def put_manifest(self, manifest: Manifest) -> None:
        self._write(self._object_path(manifest.bucket, manifest.key), manifest_to_wire(manifest))

    def stage_manifest(self, manifest: Manifest) -> StagedWrite:
        """Write the manifest to a temporary file and start flushing it (see ``publish``)."""
        path = self._object_path(manifest.bucket, manifest.key)
        return self._stage(path, manifest_to_wire(manifest))

    def stage_part(self, part: PartRecord) -> StagedWrite:
        return self._stage(self._upload_dir(part.upload_id) / f"part-{part.number}", _part(part))

    def delete_manifest(self, bucket: str, key: str) -> None:
        self._remove(self._object_path(bucket, key))

    def put_upload(self, upload: UploadRecord) -> None:
        value = {
            "b": upload.bucket,
            "k": upload.key,
            "t": upload.content_type,
            "m": upload.created_ms,
            "u": upload.metadata,
        }
        self._write(self._upload_dir(upload.upload_id) / "upload", value)

    def put_part(self, part: PartRecord) -> None:
        self._write(self._upload_dir(part.upload_id) / f"part-{part.number}", _part(part))

    def delete_upload(self, upload_id: str) -> None:
        directory = self._upload_dir(upload_id)
        (directory / "upload").unlink(missing_ok=True)  # the commit point of the delete
        self.sync_directory(directory)
        shutil.rmtree(directory, ignore_errors=True)

    # -- loading -----------------------------------------------------------------------------
    def _read(self, path: Path) -> Any | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(data) >= _CHECKSUM.size:
            (expected,) = _CHECKSUM.unpack_from(data)
            body = data[_CHECKSUM.size :]
            if xxhash.xxh3_64_intdigest(body) == expected:
                try:
                    return unpack(body, size_max=_RECORD_BYTES_MAX)
                except BlocksError:
                    pass
        self.corrupt_files.append(path)
        return None

    def load_buckets(self) -> Iterator[tuple[str, int]]:
        for path in sorted((self.root / "buckets").iterdir()):
            if path.name.startswith(".tmp-"):
                path.unlink(missing_ok=True)
                continue
            value = self._read(path)
            if value is not None:
                yield path.name, int(value["created_ms"])

    def load_manifests(self, bucket: str) -> Iterator[Manifest]:
        directory = self.root / "objects" / bucket
        if not directory.is_dir():
            return
        for path in directory.iterdir():
            if path.name.startswith(".tmp-"):
                path.unlink(missing_ok=True)  # an upload that crashed before its commit
                continue
            value = self._read(path)
            if value is not None:
                yield manifest_from_wire(value)

    def load_uploads(self) -> Iterator[tuple[UploadRecord, list[PartRecord]]]:
        for directory in sorted((self.root / "uploads").iterdir()):
            value = self._read(directory / "upload")
            if value is None:  # never committed, or aborted mid-way: finish the removal
                shutil.rmtree(directory, ignore_errors=True)
                continue
            upload = UploadRecord(
                upload_id=directory.name,
                bucket=str(value["b"]),
                key=str(value["k"]),
                content_type=str(value["t"]),
                created_ms=int(value["m"]),
                metadata={str(k): str(v) for k, v in value["u"].items()},
            )
            parts = []
            for path in sorted(directory.glob("part-*")):
                part = self._read(path)
                if part is not None:
                    parts.append(
                        PartRecord(
                            upload_id=directory.name,
                            number=int(part["n"]),
                            etag=str(part["e"]),
                            size=int(part["s"]),
                            md5=bytes(part["d"]),
                            chunks=_chunks_from_wire(part["c"]),
                        )
                    )
            yield upload, parts
