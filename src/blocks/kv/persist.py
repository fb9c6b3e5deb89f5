"""Where a cluster node keeps its replicas: one record per key, the object plus its hints.

Theory of operation. The node core changes objects and hints in memory and names the keys it
touched in ``KVNodeCore.dirty``; before the driver lets any effect of that step leave the
node (an ack, a reply), it writes those keys here with ``save``. So an acknowledged write is
on this node's store first, and a node that restarts from its store (``load``) owes exactly
the hand-offs it owed before.

A record is ``msgpack([object, [hint owner, ...]])``; a key the core dropped is deleted.

* ``MemoryObjectStore``: a dict that survives a simulated crash of the node (the simulator's
  idea of a durable disk).
* ``BitcaskObjectStore``: a ``Bitcask`` directory with the sync policy of your choice; one
  ``put_many`` per step, so a step costs one fsync under ``always``/``batch``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from blocks.core.codec import pack, unpack
from blocks.core.errors import Corruption, PeerError
from blocks.kv.bitcask import Bitcask, SyncPolicy
from blocks.kv.versions import VersionedObject, object_from_wire, object_to_wire

__all__ = ["BitcaskObjectStore", "MemoryObjectStore", "ObjectStore", "StoredRecord"]

RECORD_BYTES_MAX = 256 * 1024 * 1024
"""A stored object holds every sibling, so it may outgrow one value's limit."""

StoredRecord = tuple[bytes, VersionedObject | None, list[str]]
"""``(key, object or None when dropped, hint owners)``."""


class ObjectStore(Protocol):
    def load(self) -> Iterator[tuple[bytes, VersionedObject, list[str]]]:
        """Every stored key with its object and hint owners."""
        ...

    def save(self, records: Iterable[StoredRecord]) -> None:
        """Write (or, for a ``None`` object, delete) every record before returning.

        Raises ``StorageError`` (``StorageFull`` for a full disk) when the disk refuses; a
        prefix of the records may then be written (each whole or not at all).
        """
        ...

    def close(self) -> None: ...


def encode_record(obj: VersionedObject, hint_owners: list[str]) -> bytes:
    return pack([object_to_wire(obj), hint_owners])


def decode_record(data: bytes) -> tuple[VersionedObject, list[str]]:
    try:
        raw: Any = unpack(data)
        if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[1], list):
            raise PeerError("record must be [object, hints]")
        owners = [o for o in raw[1] if isinstance(o, str)]
        return object_from_wire(raw[0]), owners
    except (PeerError, ValueError) as error:
        raise Corruption(f"stored kv record is malformed: {error}") from None


class MemoryObjectStore:
    """A dict of encoded records; ``closed`` only marks it, the contents stay for a restart."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}

    def load(self) -> Iterator[tuple[bytes, VersionedObject, list[str]]]:
        for key, data in list(self.records.items()):
            yield (key, *decode_record(data))

    def save(self, records: Iterable[StoredRecord]) -> None:
        for key, obj, owners in records:
            if obj is None:
                self.records.pop(key, None)
            else:
                self.records[key] = encode_record(obj, owners)

    def close(self) -> None:
        pass


class BitcaskObjectStore:
    """Records in a ``Bitcask`` at ``path`` (created if missing)."""

    def __init__(self, path: str | Path, sync: SyncPolicy = "batch") -> None:
        self.bitcask = Bitcask.open(path, sync=sync, value_bytes_max=RECORD_BYTES_MAX)

    def load(self) -> Iterator[tuple[bytes, VersionedObject, list[str]]]:
        stored = self.bitcask.keys()
        for key in stored:
            data = self.bitcask.get(key)
            if data is not None:
                yield (key, *decode_record(data))

    def save(self, records: Iterable[StoredRecord]) -> None:
        puts: list[tuple[bytes | str, bytes]] = []
        for key, obj, owners in records:
            if obj is None:
                self.bitcask.delete(key)
            else:
                puts.append((key, encode_record(obj, owners)))
        if puts:
            self.bitcask.put_many(puts)

    def close(self) -> None:
        self.bitcask.close()
