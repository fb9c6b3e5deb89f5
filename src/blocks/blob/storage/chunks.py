"""Chunks over shards: write a chunk as k+m framed shards, read it back from any k good ones.

Theory of operation. ``write`` encodes a chunk with the codec, frames every payload with its
checksum (``erasure.shard_header``) and puts shard ``i`` on the node ``placement`` picks for
index ``i``. It succeeds only if every shard was stored: a write that cannot reach all its
nodes raises ``Unavailable`` and the caller decides (the store gives up the upload). Local
directories flush in the background: ``write`` returns a ``Flush`` that the caller waits on
before committing anything that references the chunk.

``read`` asks for the data shards first (for Reed-Solomon the first ``k`` hold the chunk as it
is, so a healthy read never touches parity), then for more shards only while fewer than
``needed`` have proved good. A shard that is missing, unreadable, fails its checksum or names
another chunk counts as bad. When the data shards are all good the chunk is just their
payloads (``read_views``: views, no decoding, no copy); otherwise it is decoded and must match
its SHA-256 id, and the bad shards seen on the way are re-encoded and rewritten in place
(read repair). Fewer than
``needed`` good shards raise ``Corruption`` (or ``Unavailable`` when nodes were down): wrong
bytes are never returned.

``verify`` is the scrubber's step: it reads *every* shard, so it finds rot in parity shards
that reads never touch, and repairs it the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from blocks.blob.storage.durable import Flush
from blocks.blob.storage.erasure import (
    ErasureCodec,
    Shard,
    build_shard,
    chunk_id_of,
    parse_shard,
    shard_header,
)
from blocks.blob.storage.shards import ShardStore, placement
from blocks.core.errors import BlocksError, Corruption, InvalidArgument, Unavailable
from blocks.core.hashing import HashRing

__all__ = ["ChunkStore", "VerifyResult"]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What reading every shard of one chunk found."""

    good: int
    repaired: int
    lost: bool


class ChunkStore:
    """Erasure-coded chunks spread over named ``ShardStore`` nodes by a hash ring."""

    def __init__(
        self,
        nodes: Mapping[str, ShardStore],
        codec: ErasureCodec,
        *,
        owned: Collection[str] | None = None,
    ) -> None:
        if not nodes:
            raise InvalidArgument("a chunk store needs at least one node")
        self.nodes = dict(nodes)
        self.owned = frozenset(self.nodes if owned is None else owned)
        """The nodes whose every chunk this store wrote (its own directories, never a peer
        that other writers share): the only ones an orphan collection may look at."""
        if not self.owned <= set(self.nodes):
            raise InvalidArgument("owned nodes must be among the nodes")
        self.codec = codec
        self.ring = HashRing(sorted(self.nodes))
        self.repairs = 0

    def locate(self, chunk_id: str) -> list[str]:
        """The node of each shard index of ``chunk_id``."""
        return placement(chunk_id, self.ring, self.codec.total)

    def write(self, chunk: bytes, chunk_id: str | None = None) -> str:
        """Store ``chunk`` durably as shards on its nodes; return its id (computed if not
        given)."""
        chunk_id, flush = self.write_deferred(chunk, chunk_id)
        flush.wait()
        return chunk_id

    def write_deferred(self, chunk: bytes, chunk_id: str | None = None) -> tuple[str, Flush]:
        """Like ``write`` but return at once with the flush that makes the shards durable
        (already done for nodes that flush on return). Only for chunks nobody references
        yet: their shards may be written in place."""
        if chunk_id is None:
            chunk_id = chunk_id_of(chunk)
        payloads = self.codec.encode(chunk)
        by_node: dict[str, dict[int, tuple[bytes, bytes]]] = {}
        for index, node in enumerate(self.locate(chunk_id)):
            header = shard_header(self.codec, index, len(chunk), chunk_id, payloads[index])
            by_node.setdefault(node, {})[index] = (header, payloads[index])
        flush = Flush()
        for node, shards in by_node.items():
            store = self.nodes[node]
            write_fresh = getattr(store, "write_shards", None)  # a local directory
            if write_fresh is not None:
                flush += write_fresh(chunk_id, shards)
                continue
            for index, (header, payload) in shards.items():
                store.put_shard(chunk_id, index, header + payload)
        return chunk_id, flush

    def _fetch(self, chunk_id: str, node: str, index: int) -> tuple[Shard | None, bool]:
        """(the shard if good, whether its node was unreachable)."""
        try:
            raw = self.nodes[node].get_shard(chunk_id, index)
        except Unavailable:
            return None, True
        except (OSError, BlocksError):
            return None, False
        if raw is None:
            return None, False
        shard = parse_shard(raw, chunk_id)
        if shard is not None and (
            shard.codec_id != self.codec.codec_id
            or shard.k + shard.m != self.codec.total
            or shard.index != index
        ):
            shard = None
        return shard, False

    def read(self, chunk_id: str, *, repair: bool = True) -> bytes:
        """The chunk's bytes, verified; bad shards met on the way are rewritten."""
        views = self.read_views(chunk_id, repair=repair)
        return bytes(views[0]) if len(views) == 1 else b"".join(views)

    def read_views(self, chunk_id: str, *, repair: bool = True) -> list[memoryview]:
        """The chunk as pieces to concatenate (views of the shards read, not copies),
        verified; bad shards met on the way are rewritten."""
        good, bad, unreachable = self._gather(chunk_id, self.codec.needed)
        if not bad and len(good) >= self.codec.needed:
            sizes = {shard.chunk_size for shard in good.values()}
            payloads = {index: shard.payload for index, shard in good.items()}
            views = self.codec.data_views(payloads, sizes.pop()) if len(sizes) == 1 else None
            if views is not None:
                return views
        chunk = self._decode(chunk_id, good, unreachable)
        if repair and bad:
            self._rewrite(chunk_id, chunk, bad)
        return [memoryview(chunk)]

    def _gather(self, chunk_id: str, enough: int) -> tuple[dict[int, Shard], list[int], int]:
        """Fetch ``chunk_id``'s shards in placement order until ``enough`` are good: (the
        good ones by index, the indexes found missing or bad, how many of those were on
        nodes that could not be reached)."""
        good: dict[int, Shard] = {}
        bad: list[int] = []
        unreachable = 0
        for index, node in enumerate(self.locate(chunk_id)):
            if len(good) >= enough:
                break
            shard, down = self._fetch(chunk_id, node, index)
            if shard is not None:
                good[index] = shard
            else:
                bad.append(index)
                unreachable += down
        return good, bad, unreachable

    def verify(self, chunk_id: str) -> VerifyResult:
        """Read every shard of ``chunk_id``; rewrite the bad ones if the chunk survives."""
        good, bad, unreachable = self._gather(chunk_id, self.codec.total)
        try:
            chunk = self._decode(chunk_id, good, unreachable)
        except Corruption:
            return VerifyResult(good=len(good), repaired=0, lost=True)
        except Unavailable:
            return VerifyResult(good=len(good), repaired=0, lost=False)
        repaired = self._rewrite(chunk_id, chunk, bad) if bad else 0
        return VerifyResult(good=len(good), repaired=repaired, lost=False)

    def delete(self, chunk_id: str) -> None:
        """Drop every shard of the chunk from every node that is up (best effort: a node that
        is down keeps an orphan that its next scrub collects)."""
        for node in set(self.locate(chunk_id)):
            try:
                self.nodes[node].delete_chunk(chunk_id)
            except (Unavailable, OSError):
                continue

    def stored_chunk_ids(self) -> set[str]:
        """Every chunk id any reachable node holds a shard of."""
        found: set[str] = set()
        for store in self.nodes.values():
            try:
                found.update(store.chunk_ids())
            except (Unavailable, OSError):
                continue
        return found

    def orphan_candidates(self, cutoff_ms: int) -> dict[str, list[str]]:
        """Per owned node, the chunk ids it holds whose shards were all written before
        ``cutoff_ms`` (every chunk of a node that cannot tell, such as memory). Peers are
        never asked."""
        found: dict[str, list[str]] = {}
        for name in sorted(self.owned):
            store = self.nodes[name]
            dated = getattr(store, "chunk_ids_modified_before", None)
            try:
                found[name] = list(dated(cutoff_ms) if dated is not None else store.chunk_ids())
            except (Unavailable, OSError):
                continue
        return found

    def delete_from(self, node: str, chunk_id: str) -> None:
        """Drop ``chunk_id``'s shards from one owned node (orphan collection)."""
        assert node in self.owned, f"deleting from {node}, which other writers share"
        self.nodes[node].delete_chunk(chunk_id)

    def _decode(self, chunk_id: str, good: dict[int, Shard], unreachable: int) -> bytes:
        if len(good) < self.codec.needed:
            message = (
                f"chunk {chunk_id[:12]}: {len(good)} good shards of {self.codec.total},"
                f" need {self.codec.needed}"
            )
            if unreachable and len(good) + unreachable >= self.codec.needed:
                raise Unavailable(message + f" ({unreachable} on unreachable nodes)")
            raise Corruption(message)
        sizes = {shard.chunk_size for shard in good.values()}
        if len(sizes) != 1:
            raise Corruption(f"chunk {chunk_id[:12]}: shards disagree on the chunk size")
        payloads = {index: shard.payload for index, shard in good.items()}
        chunk = self.codec.decode(payloads, sizes.pop())
        if chunk_id_of(chunk) != chunk_id:
            raise Corruption(f"chunk {chunk_id[:12]}: decoded bytes do not match the id")
        return chunk

    def _rewrite(self, chunk_id: str, chunk: bytes, indexes: list[int]) -> int:
        payloads = self.codec.encode(chunk)
        locations = self.locate(chunk_id)
        repaired = 0
        for index in indexes:
            shard = build_shard(self.codec, index, len(chunk), chunk_id, payloads[index])
            try:
                self.nodes[locations[index]].put_shard(chunk_id, index, shard)
            except (Unavailable, OSError):
                continue
            repaired += 1
        self.repairs += repaired
        return repaired
