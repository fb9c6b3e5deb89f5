"""Journal records: every change to the store's metadata as one self-contained byte string.

Theory of operation. The store persists its metadata as a sequence of records in the core
segment log (``journal``); replaying them in order rebuilds the index (``index.MetaIndex``).
Each record states a whole fact ("this bucket exists", "this key now names this manifest",
"this upload is gone and this manifest is committed"), so replay is last-writer-wins per
entity and a record is the unit of atomicity: a torn record is cut by the log's recovery and
the change it carried never happened. Completing a multipart upload is one record, so the
object appears and the upload disappears together.

Layout, byte by byte::

    kind      u8      a ``Kind``
    meta_len  u32 LE  length of the msgpack map that follows
    meta      msgpack the fields of the record
    body      rest    the object's bytes (only ``OBJECT_PUT`` of an inline object)

The body is raw, after the map, so a read of an inline object slices it out of the record
without decoding anything (``inline_body``). ``decode`` validates kind, lengths and fields
and raises ``Corruption`` for anything malformed: a record that passed the log's checksum but
is not ours is never half-applied.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

from blocks.blob.storage.meta import (
    Manifest,
    PartRecord,
    UploadRecord,
    manifest_from_wire,
    manifest_to_wire,
    part_from_wire,
    part_to_wire,
    upload_from_wire,
    upload_to_wire,
)
from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, Corruption

__all__ = [
    "BucketDelete",
    "BucketPut",
    "Kind",
    "ObjectDelete",
    "ObjectPut",
    "PartPut",
    "Record",
    "UploadAbort",
    "UploadComplete",
    "UploadPut",
    "decode",
    "encode",
    "inline_body",
]

_HEADER = struct.Struct("<BI")
META_BYTES_MAX = 4 * 1024 * 1024
"""A manifest of a 5 GiB object in 4 MiB chunks is ~100 KiB; 10,000 parts' worth fits too."""


class Kind(enum.IntEnum):
    BUCKET_PUT = 1
    BUCKET_DELETE = 2
    OBJECT_PUT = 3
    OBJECT_DELETE = 4
    UPLOAD_PUT = 5
    PART_PUT = 6
    UPLOAD_COMPLETE = 7
    UPLOAD_ABORT = 8


@dataclass(frozen=True, slots=True)
class BucketPut:
    """``owner`` (an access key id, "" for none) and ``acl`` (``s3.access``'s canned
    policy, "" for private) are the bucket's access, ``versioning`` its S3 versioning status
    ("", ``Enabled`` or ``Suspended``); a later BucketPut of the same bucket changes them.
    ``(changed_ms, changer)`` is the version of those settings (the hybrid clock's time and
    the node id of the change; ``(0, "")`` as created): replicas keep the newest settings of
    an incarnation whatever order its records arrive in, so a lagging node's copy never
    undoes a change."""

    name: str
    created_ms: int
    owner: str = ""
    acl: str = ""
    versioning: str = ""
    changed_ms: int = 0
    changer: str = ""

    @property
    def settings_version(self) -> tuple[int, str]:
        return self.changed_ms, self.changer


@dataclass(frozen=True, slots=True)
class BucketDelete:
    """``created_ms`` names the incarnation deleted (its ``BucketPut.created_ms``; 0: none
    given): a replica keeps it as the bucket's tombstone, so that no copy of that bucket (a
    ``BucketPut`` as old or older) brings it back."""

    name: str
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class ObjectPut:
    """``body`` is the object's bytes for an inline object, ``None`` for a chunked one."""

    manifest: Manifest
    body: bytes | memoryview | None = None


@dataclass(frozen=True, slots=True)
class ObjectDelete:
    """``modified_ms`` and ``writer`` version the delete like a manifest (0 and "": none).
    It removes the key's version ``version_id`` for good ("": the ``null`` version, which
    is the whole object in a bucket never versioned)."""

    bucket: str
    key: str
    modified_ms: int = 0
    writer: str = ""
    version_id: str = ""

    @property
    def version(self) -> tuple[int, str]:
        return self.modified_ms, self.writer


@dataclass(frozen=True, slots=True)
class UploadPut:
    upload: UploadRecord


@dataclass(frozen=True, slots=True)
class PartPut:
    part: PartRecord


@dataclass(frozen=True, slots=True)
class UploadComplete:
    upload_id: str
    manifest: Manifest


@dataclass(frozen=True, slots=True)
class UploadAbort:
    upload_id: str


Record = (
    BucketPut
    | BucketDelete
    | ObjectPut
    | ObjectDelete
    | UploadPut
    | PartPut
    | UploadComplete
    | UploadAbort
)


def _fields(record: Record) -> tuple[Kind, dict[str, Any]]:
    match record:
        case BucketPut(name, created_ms, owner, acl, versioning, changed_ms, changer):
            access = {"o": owner, "a": acl} if owner or acl else {}
            status = {"v": versioning} if versioning else {}
            changed = {"m": changed_ms, "w": changer} if changed_ms else {}
            fields = {"n": name, "c": created_ms, **access, **status, **changed}
            return Kind.BUCKET_PUT, fields
        case BucketDelete(name, created_ms):
            incarnation = {"c": created_ms} if created_ms else {}
            return Kind.BUCKET_DELETE, {"n": name, **incarnation}
        case ObjectPut(manifest, body):
            return Kind.OBJECT_PUT, {"m": manifest_to_wire(manifest), "i": body is not None}
        case ObjectDelete(bucket, key, modified_ms, writer, version_id):
            versioned = {"m": modified_ms, "w": writer} if modified_ms else {}
            named = {"v": version_id} if version_id else {}
            return Kind.OBJECT_DELETE, {"b": bucket, "k": key, **versioned, **named}
        case UploadPut(upload):
            return Kind.UPLOAD_PUT, upload_to_wire(upload)
        case PartPut(part):
            return Kind.PART_PUT, part_to_wire(part)
        case UploadComplete(upload_id, manifest):
            return Kind.UPLOAD_COMPLETE, {"i": upload_id, "m": manifest_to_wire(manifest)}
        case UploadAbort(upload_id):
            return Kind.UPLOAD_ABORT, {"i": upload_id}
    raise AssertionError(f"not a record: {record!r}")


def encode(record: Record) -> bytes:
    """The record's bytes (see the module docstring for the layout)."""
    kind, fields = _fields(record)
    meta = pack(fields, size_max=META_BYTES_MAX)
    head = _HEADER.pack(kind, len(meta))
    if isinstance(record, ObjectPut) and record.body is not None:
        return b"".join((head, meta, record.body))
    return head + meta


def _split(data: bytes | memoryview) -> tuple[Kind, memoryview, memoryview]:
    view = memoryview(data).cast("B")
    if len(view) < _HEADER.size:
        raise Corruption("journal record shorter than its header")
    kind_value, meta_len = _HEADER.unpack_from(view)
    end = _HEADER.size + meta_len
    if kind_value not in Kind._value2member_map_ or meta_len > META_BYTES_MAX or end > len(view):
        raise Corruption("journal record has a bad kind or length")
    return Kind(kind_value), view[_HEADER.size : end], view[end:]


def inline_body(data: bytes | memoryview) -> memoryview:
    """The body of an inline ``OBJECT_PUT`` record, without decoding its fields."""
    kind, _, body = _split(data)
    if kind is not Kind.OBJECT_PUT:
        raise Corruption(f"expected an object record, found {kind.name}")
    return body


def _decode_fields(kind: Kind, fields: Any, body: memoryview, offset: int, size: int) -> Record:
    match kind:
        case Kind.BUCKET_PUT:
            owner, acl = str(fields.get("o", "")), str(fields.get("a", ""))
            versioning = str(fields.get("v", ""))
            changed_ms, changer = int(fields.get("m", 0)), str(fields.get("w", ""))
            name, created_ms = str(fields["n"]), int(fields["c"])
            return BucketPut(name, created_ms, owner, acl, versioning, changed_ms, changer)
        case Kind.BUCKET_DELETE:
            return BucketDelete(str(fields["n"]), int(fields.get("c", 0)))
        case Kind.OBJECT_PUT:
            inline = bool(fields["i"])
            manifest = manifest_from_wire(
                fields["m"], inline_offset=offset if inline else -1, record_bytes=size
            )
            if inline and (manifest.chunks or len(body) != manifest.size):
                raise Corruption("inline object record whose body disagrees with its size")
            if not inline and len(body):
                raise Corruption("chunked object record with a body")
            return ObjectPut(manifest, body if inline else None)
        case Kind.OBJECT_DELETE:
            return ObjectDelete(
                str(fields["b"]),
                str(fields["k"]),
                int(fields.get("m", 0)),
                str(fields.get("w", "")),
                str(fields.get("v", "")),
            )
        case Kind.UPLOAD_PUT:
            return UploadPut(upload_from_wire(fields))
        case Kind.PART_PUT:
            return PartPut(part_from_wire(fields))
        case Kind.UPLOAD_COMPLETE:
            manifest = manifest_from_wire(fields["m"], record_bytes=size)
            return UploadComplete(str(fields["i"]), manifest)
        case Kind.UPLOAD_ABORT:
            return UploadAbort(str(fields["i"]))
    raise AssertionError(kind)


def decode(data: bytes | memoryview, offset: int = -1) -> Record:
    """Parse a record read at ``offset`` (an inline manifest remembers it). Raises
    ``Corruption`` for anything that is not a well-formed record."""
    kind, meta, body = _split(data)
    if kind is not Kind.OBJECT_PUT and len(body):
        raise Corruption("trailing bytes after a journal record")
    try:
        fields = unpack(meta, size_max=META_BYTES_MAX)
        return _decode_fields(kind, fields, body, offset, len(data))
    except Corruption:
        raise
    except (BlocksError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise Corruption(f"malformed {kind.name} record: {error}") from error
