"""Where a cluster node keeps its replicas: one record per key, the object plus its hints.

Theory of operation. The node core changes objects and hints in memory and names the keys it
touched in ``KVNodeCore.dirty``; before the driver lets any effect of that step leave the
node (an ack, a reply), it writes those keys here with ``save``. So an acknowledged write is
on this node's store first, and a node that restarts from its store (``load``) owes exactly
the hand-offs it owed before.

A record is ``msgpack([object, [hint owner, ...]])``; a key the core dropped is deleted.

Beside the records, a store keeps the node's *counter mark* (``dot_lease``): the highest dot
counter the node may issue. ``reserve_counters`` makes a new mark durable whatever the sync
policy (``BitcaskObjectStore``: ``COUNTER_MARK_FILE``, replaced with an fsynced
``write_atomically``), because a mark lost to a power cut would let a restart reissue dots.

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
from blocks.core.errors import Corruption, PeerError, storage_error
from blocks.core.files import write_atomically
from blocks.kv.cluster.versions import VersionedObject, object_from_wire, object_to_wire
from blocks.kv.engine.bitcask import Bitcask, SyncPolicy

__all__ = ["BitcaskObjectStore", "MemoryObjectStore", "ObjectStore", "StoredRecord"]

COUNTER_MARK_FILE = "dot-counter-mark"
"""In a Bitcask store's directory: the counter mark, as ASCII digits."""
COUNTER_MARK_BYTES_MAX = 32
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

    def counter_mark(self) -> int:
        """The last counter mark ``reserve_counters`` made durable; 0 if none ever was.
        Raises ``Corruption`` when the stored mark is unreadable."""
        ...

    def reserve_counters(self, mark: int) -> None:
        """Make ``mark`` the durable counter mark before returning, whatever the sync policy.
        Raises ``StorageError`` (``StorageFull``) when the disk refuses; the old mark stays."""
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
        self.mark = 0

    def load(self) -> Iterator[tuple[bytes, VersionedObject, list[str]]]:
        for key, data in list(self.records.items()):
            yield (key, *decode_record(data))

    def save(self, records: Iterable[StoredRecord]) -> None:
        for key, obj, owners in records:
            if obj is None:
                self.records.pop(key, None)
            else:
                self.records[key] = encode_record(obj, owners)

    def counter_mark(self) -> int:
        return self.mark

    def reserve_counters(self, mark: int) -> None:
        self.mark = mark

    def close(self) -> None:
        pass


class BitcaskObjectStore:
    """Records in a ``Bitcask`` at ``path`` (created if missing)."""

    def __init__(self, path: str | Path, sync: SyncPolicy = "batch") -> None:
        self.bitcask = Bitcask.open(path, sync=sync, value_bytes_max=RECORD_BYTES_MAX)
        # ``save`` returns only after an fsync: the driver sends replica requests ahead of it.
        self.saves_wait_for_disk = sync != "never"
        self._mark_path = Path(path) / COUNTER_MARK_FILE

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

    def counter_mark(self) -> int:
        try:
            with open(self._mark_path, "rb") as file:
                data = file.read(COUNTER_MARK_BYTES_MAX + 1)
        except FileNotFoundError:
            return 0
        text = data.strip()
        if not text.isdigit() or len(data) > COUNTER_MARK_BYTES_MAX:
            raise Corruption(f"{self._mark_path} does not hold a counter mark")
        return int(text)

    def reserve_counters(self, mark: int) -> None:
        try:
            write_atomically(self._mark_path, b"%d\n" % mark)
        except OSError as error:
            raise storage_error(error, "reserving dot counters") from None

    def close(self) -> None:
        self.bitcask.close()
