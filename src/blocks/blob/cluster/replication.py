"""Metadata replication between blob nodes: pushes, syncs, repair and collection rounds.

Theory of operation. Each node of a cluster started with ``--replicate-metadata`` is a full
replica of the metadata (``replica.ReplicatedBlobStore``). The ``Replicator`` is its network
half, over the peers' existing shard channel (``/_shards/_meta/...``, the cluster token):

    POST /_shards/_meta/apply       msgpack list of records; 200 once all are durable there,
                                    409 if one names a bucket or upload the peer lacks
    GET  /_shards/_meta/snapshot    msgpack list of the peer's live metadata as records
    POST /_shards/_meta/key         msgpack [bucket, key]; the peer's records of that key
    POST /_shards/_meta/upload      msgpack [upload id]; the peer's records of that upload
    POST /_shards/_meta/bucket      msgpack [bucket]; the peer's record of that bucket
    POST /_shards/_meta/referenced  msgpack list of chunk ids; answers those it references

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

Limits: a push batch or a snapshot above ``META_BODY_BYTES_MAX`` is refused (and counted);
pushes run on ``PUSH_THREADS`` threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from blocks.blob.cluster.gc import ClusterCollector
from blocks.blob.cluster.peers import META_SEGMENT, HttpShardStore
from blocks.blob.cluster.replica import ReplicatedBlobStore
from blocks.blob.s3.http import Response
from blocks.blob.storage.shards import DirectoryShardStore
from blocks.core.clock import Clock, SystemClock
from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, Corruption, InvalidArgument, NotFound, Unavailable

__all__ = [
    "GC_GRACE_S",
    "META_BODY_BYTES_MAX",
    "SYNC_INTERVAL_S",
    "Replicator",
]

_LOGGER = logging.getLogger("blocks.blob")
META_BODY_BYTES_MAX = 64 * 1024 * 1024
PUSH_THREADS = 16
SYNC_INTERVAL_S = 30.0
GC_GRACE_S = 3600.0
_BASE = f"/{META_SEGMENT}"


class Replicator:
    """Pushes, syncs, repairs and collects for one node (see the module docstring)."""

    def __init__(
        self,
        store: ReplicatedBlobStore,
        peers: Mapping[str, HttpShardStore],
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
        self.bodies_refused = 0
        self.sync_rounds = 0
        self.repaired = 0

    # -- pushes ------------------------------------------------------------------------------
    def replicate(self, records: list[bytes]) -> None:
        """Push ``records`` to every peer; return once a majority of nodes (this one, whose
        journal already holds them, included) have them durably; ``Unavailable`` if not."""
        needed = self.quorum - 1
        if needed <= 0:
            return
        body = pack(records, size_max=META_BODY_BYTES_MAX)
        pending: set[Future[bool]] = {
            self._pool.submit(self._push, peer, body) for peer in self.peers.values()
        }
        acks = 0
        while pending and acks < needed:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            acks += sum(1 for future in done if future.result())
        if acks < needed:
            self.pushes_short += 1
            raise Unavailable(
                f"metadata durable on {acks + 1} of {self.nodes} nodes, need {self.quorum}"
            )

    def catch_up_key(self, bucket: str, key: str) -> bool:
        """Ask every peer what it holds of one key (and its bucket), in parallel, and apply
        it here; returns whether anything changed. Unreachable peers are skipped."""
        body = pack([bucket, key], size_max=META_BODY_BYTES_MAX)
        fetches = [self._pool.submit(self._fetch_key, peer, body) for peer in self.peers.values()]
        applied = False
        for fetch in fetches:
            for record in fetch.result():
                try:
                    applied |= self.store.apply_remote(record)
                except NotFound:
                    continue
        self.keys_caught_up += applied
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
        body = pack([bucket], size_max=META_BODY_BYTES_MAX)
        asked = [self._pool.submit(self._fetch_bucket, peer, body) for peer in self.peers.values()]

        def finish() -> None:
            pending: set[Future[list[bytes] | None]] = set(asked)
            answers: list[list[bytes]] = []
            while pending and len(answers) < needed:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                answers += [answer for f in done if (answer := f.result()) is not None]
            if len(answers) < needed:
                raise Unavailable(
                    f"bucket {bucket!r} read from {len(answers) + 1} of {self.nodes} nodes, "
                    f"need {self.quorum}"
                )
            for records in answers:
                for record in records:
                    try:
                        self.store.apply_remote(record)
                    except NotFound:
                        continue

        return finish

    @staticmethod
    def _fetch_bucket(peer: HttpShardStore, body: bytes) -> list[bytes] | None:
        """The peer's record of a bucket ([] if it holds none); None if it did not answer."""
        try:
            status, reply = peer.call("POST", f"{_BASE}/bucket", body)
            if status != 200:
                return None
            return _records(unpack(reply, size_max=META_BODY_BYTES_MAX))
        except (Unavailable, InvalidArgument):
            return None

    def catch_up_upload(self, upload_id: str) -> bool:
        """Ask every peer what it holds of one multipart upload, in parallel, and apply it
        here (its bucket, the upload, then its parts); returns whether anything changed."""
        body = pack([upload_id], size_max=META_BODY_BYTES_MAX)
        fetches = [
            self._pool.submit(self._fetch_key, peer, body, "upload") for peer in self.peers.values()
        ]
        applied = False
        for fetch in fetches:
            for record in fetch.result():
                try:
                    applied |= self.store.apply_remote(record)
                except NotFound:
                    continue
        return applied

    @staticmethod
    def _fetch_key(peer: HttpShardStore, body: bytes, route: str = "key") -> list[bytes]:
        try:
            status, reply = peer.call("POST", f"{_BASE}/{route}", body)
            if status != 200:
                return []
            return _records(unpack(reply, size_max=META_BODY_BYTES_MAX))
        except (Unavailable, InvalidArgument):
            return []

    @staticmethod
    def _push(peer: HttpShardStore, body: bytes) -> bool:
        try:
            status, _ = peer.call("POST", f"{_BASE}/apply", body)
        except Unavailable:
            return False
        return status == 200

    # -- the routes peers call ---------------------------------------------------------------
    def handle(self, method: str, parts: list[str], body: bytes) -> Response:
        """Serve ``/_shards/_meta/<parts>`` (runs on the server's shard pool)."""
        route = (method, "/".join(parts))
        try:
            if route == ("POST", "apply"):
                for record in _records(unpack(body, size_max=META_BODY_BYTES_MAX)):
                    self.store.apply_remote(record)
                return Response(200)
            if route == ("GET", "snapshot"):
                records = list(self.store.snapshot_records())
                if sum(len(record) for record in records) > META_BODY_BYTES_MAX:
                    self.bodies_refused += 1
                    return Response(507)
                return Response(200, {}, pack(records, size_max=2 * META_BODY_BYTES_MAX))
            if route == ("POST", "key"):
                asked = unpack(body, size_max=META_BODY_BYTES_MAX)
                if not (isinstance(asked, list) and len(asked) == 2):
                    raise InvalidArgument("expected [bucket, key]")
                return Response(200, {}, pack(self.store.key_records(*map(str, asked))))
            if route == ("POST", "bucket"):
                asked = unpack(body, size_max=META_BODY_BYTES_MAX)
                if not (isinstance(asked, list) and len(asked) == 1):
                    raise InvalidArgument("expected [bucket]")
                return Response(200, {}, pack(self.store.bucket_records(str(asked[0]))))
            if route == ("POST", "upload"):
                asked = unpack(body, size_max=META_BODY_BYTES_MAX)
                if not (isinstance(asked, list) and len(asked) == 1):
                    raise InvalidArgument("expected [upload id]")
                return Response(200, {}, pack(self.store.upload_records(str(asked[0]))))
            if route == ("POST", "referenced"):
                asked = _records(unpack(body, size_max=META_BODY_BYTES_MAX))
                ids = [chunk_id.decode("ascii", "replace") for chunk_id in asked]
                return Response(200, {}, pack(self.store.referenced(ids)))
        except NotFound:
            return Response(409)
        except (InvalidArgument, Corruption):
            return Response(400)
        except BlocksError:
            return Response(503)
        return Response(404)

    # -- background rounds -------------------------------------------------------------------
    def sync_once(self) -> int:
        """Pull every reachable peer's snapshot and apply it; returns the records that changed
        something here. Sets ``synced`` the first time every peer answered."""
        applied = answered = 0
        for peer in self.peers.values():
            try:
                status, body = peer.call("GET", f"{_BASE}/snapshot")
                if status != 200:
                    continue
                records = _records(unpack(body, size_max=2 * META_BODY_BYTES_MAX))
            except (Unavailable, InvalidArgument) as error:
                _LOGGER.info("metadata sync from %s failed: %s", peer.name, error)
                continue
            answered += 1
            for record in records:
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
        answers = [self._ask(peer, plan.due) for peer in self.peers.values()]
        deleted = 0
        for chunk_id in self.collector.decide(plan.due, answers):
            if not _older_than(self.local, chunk_id, cutoff_ms):
                continue
            if self.store.ledger.delete_if_unreferenced(chunk_id, self.local.delete_chunk):
                self.collector.deleted(chunk_id)
                deleted += 1
        return deleted

    @staticmethod
    def _ask(peer: HttpShardStore, due: tuple[str, ...]) -> set[str] | None:
        try:
            body = pack([c.encode("ascii") for c in due], size_max=META_BODY_BYTES_MAX)
            status, reply = peer.call("POST", f"{_BASE}/referenced", body)
            if status != 200:
                return None
            return {str(chunk_id) for chunk_id in unpack(reply, size_max=META_BODY_BYTES_MAX)}
        except (Unavailable, InvalidArgument):
            return None

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


def _records(value: object) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(r, bytes) for r in value):
        raise InvalidArgument("expected a list of byte strings")
    return value


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
