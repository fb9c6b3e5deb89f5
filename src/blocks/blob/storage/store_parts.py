"""What the halves of ``LocalBlobStore`` rely on from one another, declared once.

``LocalBlobStore`` is assembled from mixins, one concern a file: ``InlineCacheMixin``,
``CommitMixin`` (the journal), ``BucketMixin``, ``VersionsMixin``, ``MultipartMixin``, and in
a cluster ``PeerRecordsMixin``. Each calls methods another one defines. ``StoreParts`` declares those
methods and the shared attributes for the type checker; at run time it has no methods at
all, so whatever the order of a store's bases it can never hide the real ones.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Hashable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from blocks.blob.storage.index import MetaIndex
from blocks.blob.storage.ledger import ChunkLedger
from blocks.core.clock import Clock

if TYPE_CHECKING:
    from blocks.blob.api import ObjectInfo
    from blocks.blob.conditions import WriteCondition
    from blocks.blob.storage.committing import RecordT
    from blocks.blob.storage.meta import ChunkRef, Manifest
    from blocks.blob.storage.records import ObjectPut, Record, UploadComplete

__all__ = ["StoreParts"]


class StoreParts:
    """The attributes and methods the store's mixins share (see the module docstring)."""

    _lock: threading.RLock
    _latest: dict[Hashable, int]
    """Per entity with a change in flight: the sequence of its latest change."""
    index: MetaIndex
    ledger: ChunkLedger
    clock: Clock
    rng: random.Random
    node_id: str

    if TYPE_CHECKING:
        # ``LocalBlobStore``
        def _check_open(self) -> None: ...

        def _bucket_index(self, bucket: str) -> dict[str, Manifest]: ...

        def _commit_object(
            self,
            record: ObjectPut | UploadComplete,
            pinned: list[ChunkRef],
            upload_id: str | None = None,
            condition: WriteCondition | None = None,
        ) -> Manifest: ...

        # ``CommitMixin``
        def _busy(self, entity: Hashable) -> bool: ...

        def _submit(self, entity: Hashable, record: Record) -> tuple[int, Future[int], int]: ...

        def _submit_ordered(
            self, entity: Hashable, record: RecordT
        ) -> tuple[RecordT, int, Future[int], int]: ...

        def _ordered(self, entity: Hashable, record: RecordT) -> RecordT: ...

        def _await_room(self) -> None: ...

        def _finish(self, entity: Hashable, sequence: int) -> bool: ...

        def _durable(self, entity: Hashable, sequence: int, future: Future[int]) -> int: ...

        def _maybe_compact(self) -> bool: ...

        def _read_inline(self, offset: int) -> memoryview: ...

        # ``VersionsMixin``
        def _stamp(self, bucket: str, key: str) -> tuple[int, str]: ...

        def _info(self, manifest: Manifest) -> ObjectInfo: ...

        def _manifest(self, bucket: str, key: str, version_id: str | None = None) -> Manifest: ...
