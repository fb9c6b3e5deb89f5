"""Metadata values: chunk references, object manifests, multipart uploads and parts.

Theory of operation. These are the plain values the store's index holds and its journal
(``records``) persists. Each has a compact msgpack wire form (short keys, chunk lists as
pairs); ``*_from_wire`` validates shape and types and raises ``Corruption`` for anything
else, so a damaged or foreign record can never become a half-built value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from blocks.core.errors import Corruption

__all__ = [
    "ChunkRef",
    "Manifest",
    "PartRecord",
    "UploadRecord",
    "manifest_from_wire",
    "manifest_to_wire",
    "part_from_wire",
    "part_to_wire",
    "upload_from_wire",
    "upload_to_wire",
]


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of an object: its content id and size in bytes."""

    chunk_id: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """An object: its chunks in order plus what HEAD returns.

    An *inline* object has no chunks: its bytes sit in the journal record that committed it,
    at offset ``inline_offset`` (``-1`` for a chunked object). ``record_bytes`` is the size
    of that record (what keeping the object costs the journal; not persisted).
    """

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    modified_ms: int
    chunks: tuple[ChunkRef, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    parts_count: int = 0
    inline_offset: int = -1
    record_bytes: int = 0
    checksums: dict[str, str] = field(default_factory=dict)
    """Whole-object checksums verified at upload, by algorithm (``crc32``: base64)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Standard headers stored with the object (``cache-control``, ``expires``...)."""
    part_sizes: tuple[int, ...] = ()
    """A multipart object's part sizes in order (GET ``?partNumber``); empty otherwise."""
    writer: str = ""
    """The node id that committed it first ("" on a single node): with ``modified_ms`` the
    version that orders writes of one key across a cluster (``replica``)."""
    version_id: str = ""
    """Its S3 version id; "" for the ``null`` version (every object of a bucket never
    versioned, and what a bucket with versioning suspended writes)."""
    delete_marker: bool = False
    """An S3 delete marker: no bytes, and a key whose newest version it is reads as absent."""

    @property
    def version(self) -> tuple[int, str]:
        """(``modified_ms``, ``writer``): the larger version wins a key in a cluster."""
        return self.modified_ms, self.writer

    @property
    def order(self) -> tuple[int, str, str]:
        """Where it sits among the versions of its key: the largest is the current one."""
        return self.modified_ms, self.writer, self.version_id

    @property
    def inline(self) -> bool:
        return self.inline_offset >= 0


@dataclass(frozen=True, slots=True)
class UploadRecord:
    upload_id: str
    bucket: str
    key: str
    content_type: str
    created_ms: int
    metadata: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    """Standard headers the completed object will keep (see ``Manifest.headers``)."""
    checksum_algorithm: str = ""
    """The checksum every part carries and the object keeps as a composite ("": none)."""


@dataclass(frozen=True, slots=True)
class PartRecord:
    upload_id: str
    number: int
    etag: str
    size: int
    md5: bytes
    chunks: tuple[ChunkRef, ...]
    checksums: dict[str, str] = field(default_factory=dict)
    """The part's checksums verified at upload, by algorithm (base64)."""


def _chunks_to_wire(chunks: tuple[ChunkRef, ...]) -> list[list[Any]]:
    return [[chunk.chunk_id, chunk.size] for chunk in chunks]


def _chunks_from_wire(value: Any) -> tuple[ChunkRef, ...]:
    return tuple(ChunkRef(str(chunk_id), int(size)) for chunk_id, size in value)


def _metadata_from_wire(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()}


def _decoding(what: str) -> Corruption:
    return Corruption(f"malformed {what} record")


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
        **({"x": manifest.checksums} if manifest.checksums else {}),
        **({"h": manifest.headers} if manifest.headers else {}),
        **({"ps": list(manifest.part_sizes)} if manifest.part_sizes else {}),
        **({"w": manifest.writer} if manifest.writer else {}),
        **({"v": manifest.version_id} if manifest.version_id else {}),
        **({"dm": True} if manifest.delete_marker else {}),
    }


def manifest_from_wire(value: Any, *, inline_offset: int = -1, record_bytes: int = 0) -> Manifest:
    try:
        return Manifest(
            bucket=str(value["b"]),
            key=str(value["k"]),
            size=int(value["s"]),
            etag=str(value["e"]),
            content_type=str(value["t"]),
            modified_ms=int(value["m"]),
            chunks=_chunks_from_wire(value["c"]),
            metadata=_metadata_from_wire(value["u"]),
            parts_count=int(value["p"]),
            inline_offset=inline_offset,
            record_bytes=record_bytes,
            checksums=_metadata_from_wire(value.get("x", {})),
            headers=_metadata_from_wire(value.get("h", {})),
            part_sizes=tuple(int(size) for size in value.get("ps", ())),
            writer=str(value.get("w", "")),
            version_id=str(value.get("v", "")),
            delete_marker=bool(value.get("dm", False)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _decoding("manifest") from error


def upload_to_wire(upload: UploadRecord) -> dict[str, Any]:
    return {
        "i": upload.upload_id,
        "b": upload.bucket,
        "k": upload.key,
        "t": upload.content_type,
        "m": upload.created_ms,
        "u": upload.metadata,
        **({"h": upload.headers} if upload.headers else {}),
        **({"a": upload.checksum_algorithm} if upload.checksum_algorithm else {}),
    }


def upload_from_wire(value: Any) -> UploadRecord:
    try:
        return UploadRecord(
            upload_id=str(value["i"]),
            bucket=str(value["b"]),
            key=str(value["k"]),
            content_type=str(value["t"]),
            created_ms=int(value["m"]),
            metadata=_metadata_from_wire(value["u"]),
            headers=_metadata_from_wire(value.get("h", {})),
            checksum_algorithm=str(value.get("a", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _decoding("upload") from error


def part_to_wire(part: PartRecord) -> dict[str, Any]:
    return {
        "i": part.upload_id,
        "n": part.number,
        "e": part.etag,
        "s": part.size,
        "d": part.md5,
        "c": _chunks_to_wire(part.chunks),
        **({"x": part.checksums} if part.checksums else {}),
    }


def part_from_wire(value: Any) -> PartRecord:
    try:
        return PartRecord(
            upload_id=str(value["i"]),
            number=int(value["n"]),
            etag=str(value["e"]),
            size=int(value["s"]),
            md5=bytes(value["d"]),
            chunks=_chunks_from_wire(value["c"]),
            checksums=_metadata_from_wire(value.get("x", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _decoding("part") from error
