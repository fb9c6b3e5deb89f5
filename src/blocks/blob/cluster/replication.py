"""Metadata replication between blob nodes: pushes, syncs, repair and collection rounds.

Theory of operation. Each node of a cluster started with ``--replicate-metadata`` is a full
replica of the metadata (``replica.ReplicatedBlobStore``). The ``Replicator`` is its network
half: it sends the ``meta.*`` messages of ``peer_protocol`` (``apply``, ``snapshot``,
``key``, ``upload``, ``bucket``, ``referenced``) over each peer's ``PeerChannel``, the same
channel the shards travel on (HTTP between processes, any ``core.Transport`` otherwise).

*Pushes.* A local change's records go to every peer at once; the change is acknowledged
when a majority of the nodes, this one included, hold them durably (2 of 3), so any two
majorities share a node that has every acknowledged change. Peers that missed a push (down,
paused, refused) catch up by *sync*: every ``sync_interval_s`` (and once before the node
serves) the node pulls each peer's snapshot and applies it record by record; versions make
that idempotent and order-free. A node whose data directory was wiped thus gets the whole
metadata back from the others before it answers its first request.

*Reads of unknown keys.* A HEAD, GET or DELETE of a key (or bucket) this node does not
hold asks every peer for its records of that key (``catch_up_key``) before answering 404: an
acknowledged write is on a majority, hence on some other node if not on this one, so every
node sees it. Listings are served from the local index and may lag until the next sync.
A part or a completion of an upload this node has not received (created or uploaded
through another node) fetches the upload the same way (``catch_up_upload``).

*Writes read the bucket's settings from a majority.* Before a write of an object stamps
its version (a fresh id, or the null version, by the bucket's versioning status), the node
asks every peer for its record of the bucket (``read_bucket``) and applies the newest
from a majority of the nodes (this one counts): a status change acknowledged on a majority
is on one of them, so no node writes a null version into a bucket whose versioning was
enabled before the write began. Short of a majority the write fails (``Unavailable``)
before anything is journaled.

*Repair.* After its first sync a node verifies every chunk the metadata references (every
shard, on every node) and rewrites the missing or bad ones where they belong: a node that
came back with an empty disk gets its shards back, and redundancy is whole again.

*Collection* (``gc``): each round, chunks on this node's disk that are old, unreferenced
here and marked for the grace period are offered to every peer; only those no node
references are deleted, and only from this node's disk.

Limits: a push batch above ``META_BODY_BYTES_MAX`` is refused here, a snapshot above it by
the peer (counted in its ``ShardHost.bodies_refused``); pushes run on ``PUSH_THREADS``
threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from blocks.blob.cluster.gc import ClusterCollector
from blocks.blob.cluster.peer_protocol import META_BODY_BYTES_MAX, PeerChannel
from blocks.blob.cluster.replica import ReplicatedBlobStore
from blocks.blob.storage.shards import DirectoryShardStore
from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import BlocksError, InvalidArgument, NotFound, Unavailable

__all__ = [
    "GC_GRACE_S",
    "META_BODY_BYTES_MAX",
    "SYNC_INTERVAL_S",
    "Replicator",
]

_LOGGER = logging.getLogger("blocks.blob")
PUSH_THREADS = 16
SYNC_INTERVAL_S = 30.0
GC_GRACE_S = 3600.0


class Replicator:
    """Pushes, syncs, repairs and collects for one node (see the module docstring)."""

    def __init__(
        self,
        store: ReplicatedBlobStore,
        peers: Mapping[str, PeerChannel],
        local: DirectoryShardStore,
        *,
        sync_interval_s: float = SYNC_INTERVAL_S,
        gc_grace_s: float = GC_GRACE_S,
        clock: Clock | None = None,
    ) -> None:
        if sync_interval_s <= 0 or gc_grace_s < 0:
            raise InvalidArgument("sync_interval_s must be > 0 and gc_grace_s >= 0")
        self.store = store
        self.peers = dict(peers)
        self.local = local
        self.sync_interval_s = sync_interval_s
        self.clock = clock or SystemClock()
        self.collector = ClusterCollector(int(gc_grace_s * 1000))
        self.nodes = len(self.peers) + 1
        self.quorum = self.nodes // 2 + 1
        self._pool = ThreadPoolExecutor(PUSH_THREADS, thread_name_prefix="blob-meta")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        """Set once a sync has pulled from every peer (and repair has run after it)."""
        self.pushes_short = 0
        self.keys_caught_up = 0
        self.sync_rounds = 0
        self.repaired = 0

    # -- pushes ------------------------------------------------------------------------------
    def replicate(self, records: list[bytes]) -> None:
        """Push ``records`` to every peer; return once a majority of nodes (this one, whose
        journal already holds them, included) have them durably; ``Unavailable`` if not."""
        needed = self.quorum - 1
        if needed <= 0:
            return
        if sum(len(record) for record in records) > META_BODY_BYTES_MAX:
            raise InvalidArgument(f"a push above {META_BODY_BYTES_MAX} bytes")
        message: list[Any] = ["meta.apply", records]
        pending: set[Future[Any]] = {
            self._pool.submit(_ask, peer, message, False) for peer in self.peers.values()
        }
        acks = 0
        while pending and acks < needed:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            acks += sum(1 for future in done if future.result() is not False)
        if acks < needed:
            self.pushes_short += 1
            raise Unavailable(
                f"metadata durable on {acks + 1} of {self.nodes} nodes, need {self.quorum}"
            )

    def catch_up_key(self, bucket: str, key: str) -> bool:
        """Ask every peer what it holds of one key (and its bucket), in parallel, and apply
        it here; returns whether anything changed. Unreachable peers are skipped."""
        applied = self._fetch_and_apply(["meta.key", bucket, key])
        self.keys_caught_up += applied
        return applied

    def catch_up_upload(self, upload_id: str) -> bool:
        """Ask every peer what it holds of one multipart upload, in parallel, and apply it
        here (its bucket, the upload, then its parts); returns whether anything changed."""
        return self._fetch_and_apply(["meta.upload", upload_id])

    def _fetch_and_apply(self, message: list[Any]) -> bool:
        """Send ``message`` to every peer in parallel and apply the records they answer."""
        fetches = [self._pool.submit(_ask, peer, message, []) for peer in self.peers.values()]
        return self._apply([_records(fetch.result()) for fetch in fetches])

    def _apply(self, answers: list[list[bytes]]) -> bool:
        """Apply every record of ``answers`` here (those whose bucket or upload this node
        lacks are skipped); returns whether anything changed."""
        applied = False
        for records in answers:
            for record in records:
                try:
                    applied |= self.store.apply_remote(record)
                except NotFound:  # its bucket or upload went away meanwhile
                    continue
        return applied

    def read_bucket(self, bucket: str) -> Callable[[], None]:
        """Ask every peer for its record of ``bucket``, in parallel, and return at once the
        call that finishes the read: it waits until a majority of the nodes (this one
        included) have answered, applies their answers, and raises ``Unavailable`` if a
        majority does not answer. Peers that answer later are not waited for. A PUT starts
        the read before it stores the body and finishes it before stamping its version."""
        needed = self.quorum - 1
        if needed <= 0:
            return _nothing
        message = ["meta.bucket", bucket]
        asked = [self._pool.submit(_ask, peer, message, None) for peer in self.peers.values()]

        def finish() -> None:
            pending: set[Future[Any]] = set(asked)
            answers: list[list[bytes]] = []
            while pending and len(answers) < needed:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                answers += [_records(answer) for f in done if (answer := f.result()) is not None]
            if len(answers) < needed:
                raise Unavailable(
                    f"bucket {bucket!r} read from {len(answers) + 1} of {self.nodes} nodes, "
                    f"need {self.quorum}"
                )
            self._apply(answers)

        return finish

    # -- background rounds -------------------------------------------------------------------
    def sync_once(self) -> int:
        """Pull every reachable peer's snapshot and apply it; returns the records that changed
        something here. Sets ``synced`` the first time every peer answered."""
        applied = answered = 0
        for peer in self.peers.values():
            records = _ask(peer, ["meta.snapshot"], None)
            if records is None:
                continue
            answered += 1
            for record in _records(records):
                try:
                    applied += self.store.apply_remote(record)
                except NotFound:  # its bucket went away meanwhile
                    continue
        self.sync_rounds += 1
        if answered == len(self.peers):
            self.synced.set()
        return applied

    def repair_once(self) -> int:
        """Verify every referenced chunk on every node; rewrite missing or bad shards."""
        repaired = 0
        for chunk_id in self.store.ledger.referenced():
            if self._stop.is_set():
                break
            repaired += self.store.chunks.verify(chunk_id).repaired
        self.repaired += repaired
        return repaired

    def collect_once(self) -> int:
        """One collection round (``gc``); returns how many chunks left this node's disk."""
        now_ms = self.clock.now_ms()
        cutoff_ms = now_ms - self.collector.grace_ms
        old = self.local.chunk_ids_modified_before(cutoff_ms)
        candidates = [c for c in old if self.store.ledger.count(c) == 0]
        plan = self.collector.plan(candidates, now_ms)
        if not plan.due:
            return 0
        message = ["meta.referenced", list(plan.due)]
        answers = [_referenced(_ask(peer, message, None)) for peer in self.peers.values()]
        deleted = 0
        for chunk_id in self.collector.decide(plan.due, answers):
            if not _older_than(self.local, chunk_id, cutoff_ms):
                continue
            if self.store.ledger.delete_if_unreferenced(chunk_id, self.local.delete_chunk):
                self.collector.deleted(chunk_id)
                deleted += 1
        return deleted

    def start(self) -> None:
        """Run sync, repair (once, after the first full sync) and collection in a thread."""
        self._thread = threading.Thread(target=self._run, name="blob-meta-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        repaired = False
        while not self._stop.is_set():
            try:
                self.sync_once()
                if self.synced.is_set() and not repaired:
                    self.repair_once()
                    repaired = True
                if repaired:
                    self.collect_once()
            except Exception:
                _LOGGER.exception("metadata round failed")
            self._stop.wait(self.sync_interval_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _nothing() -> None:
    return None


def _ask(peer: PeerChannel, message: list[Any], failed: Any) -> Any:
    """``peer``'s answer to ``message``, or ``failed`` if it could not or would not answer
    (a peer that is down or lacks what a pushed record names is one more node short)."""
    try:
        return peer.call(message)
    except BlocksError as error:
        _LOGGER.debug("%s to %s failed: %s", message[0], peer.name, error)
        return failed


def _records(value: object) -> list[bytes]:
    """A peer's list of records; a malformed answer counts as none."""
    if not isinstance(value, list) or not all(isinstance(r, bytes) for r in value):
        return []
    return value


def _referenced(value: object) -> set[str] | None:
    """A peer's answer to ``meta.referenced``; ``None`` (a veto) if it did not answer."""
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        return None
    return set(value)


def _older_than(local: DirectoryShardStore, chunk_id: str, cutoff_ms: int) -> bool:
    """Whether every shard file of ``chunk_id`` here was last written before ``cutoff_ms``."""
    directory: Path = local.path_of(chunk_id, 0).parent
    for path in directory.glob(f"{chunk_id}.*"):
        try:
            if path.stat().st_mtime_ns // 1_000_000 >= cutoff_ms:
                return False
        except FileNotFoundError:
            continue
    return True
