"""Versions of metadata changes in a cluster: a hybrid clock, and what each record changes.

Theory of operation. Writes of one key on different nodes are ordered by a version,
``(modified_ms, writer)``: ``modified_ms`` from a ``HybridClock`` (wall-clock milliseconds
that never go back and jump past every version the node has seen) and the writer's node id
to break ties. ``version_of`` reads it from a record; ``entity_of`` names what a record
changes, as the store's commit path does (``committing``), so a peer's record and a local
change of the same key meet on the same entity.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Hashable

from blocks.blob.storage.records import (
    BucketDelete,
    BucketPut,
    ObjectDelete,
    ObjectPut,
    PartPut,
    Record,
    UploadAbort,
    UploadComplete,
    UploadPut,
)
from blocks.core.clock import Clock

KeyChange = ObjectPut | UploadComplete | ObjectDelete
"""A record that changes one key (what ``version_of`` reads a version from)."""

__all__ = ["HybridClock", "entity_of", "object_entity", "restamped", "version_of"]


class HybridClock:
    """Wall-clock milliseconds that never repeat or go back, pushed past every ``observe``d
    version: a local change always orders after what this node has seen. Thread-safe."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self._last_ms = 0
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            self._last_ms = max(self._last_ms + 1, self.base.now_ms())
            return self._last_ms

    def observe(self, ms: int) -> None:
        with self._lock:
            self._last_ms = max(self._last_ms, ms)

    def monotonic(self) -> float:
        return self.base.monotonic()


def version_of(record: Record) -> tuple[int, str] | None:
    """The version of a record that changes one key; None for other records."""
    match record:
        case ObjectPut(manifest, _) | UploadComplete(_, manifest):
            return manifest.version
        case ObjectDelete():
            return record.version if record.modified_ms else None
    return None


def restamped(record: KeyChange, modified_ms: int) -> KeyChange:
    """``record`` with the time of its version moved to ``modified_ms``; its writer, version
    id, chunks and body stay (chunks are named by their bytes, not by the version)."""
    if isinstance(record, ObjectDelete):
        return dataclasses.replace(record, modified_ms=modified_ms)
    manifest = dataclasses.replace(record.manifest, modified_ms=modified_ms)
    return dataclasses.replace(record, manifest=manifest)


def object_entity(bucket: str, key: str, version_id: str = "") -> Hashable:
    """The entity of one version of a key: the null version ("") is the key itself, as it
    was before versions; any other version is an entity of its own, since it never
    replaces another."""
    return ("object", bucket, key, version_id) if version_id else ("object", bucket, key)


def entity_of(record: Record) -> Hashable:
    """What a record changes, as the store's commit path names it (``committing``)."""
    match record:
        case ObjectPut(manifest, _) | UploadComplete(_, manifest):
            return object_entity(manifest.bucket, manifest.key, manifest.version_id)
        case ObjectDelete(bucket, key, _, _, version_id):
            return object_entity(bucket, key, version_id)
        case BucketPut(name) | BucketDelete(name):
            return ("bucket", name)
        case UploadPut(upload):
            return ("upload", upload.bucket, upload.upload_id)
        case UploadAbort(upload_id):
            return ("upload-abort", upload_id)
        case PartPut(part):
            return ("part", part.upload_id, part.number)
    raise AssertionError(record)
