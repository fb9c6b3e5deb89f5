"""A coordinator node: one ``ShardedIndex`` over remote shard nodes, served like any node.

Theory of operation. ``blocks search serve --remote-shards A+B,C+D`` starts a node whose vector
index is a ``ShardedIndex`` of ``SearchClient`` replicas: shard 0 is served by the nodes ``A``
and ``B`` (replicas holding the same vectors), shard 1 by ``C`` and ``D``. Each shard node is an
ordinary ``blocks search serve --data-dir ...`` process, so each one logs and snapshots its own
vectors (``blocks.search.durable``); the coordinator holds no data and refuses a data
directory. An add is split by ``shard_of(id)`` and written to every replica of the owning
shard that is up; a search is scattered to one replica per shard, failing over to the next
replica on ``Unavailable``/``Timeout``, and the answers are merged exactly (metric-aware,
ties by id), so with every shard present the answer equals brute force over the union.

A shard with no replica answering makes the search fail with ``Unavailable`` (or ``Timeout``
at the deadline): the wire reply has no field to flag a partial answer yet, and a coordinator
that silently returned a partial top-k as complete would be wrong. Library users get flagged
partial answers from ``ShardedIndex(..., allow_partial=True)``.
"""

from __future__ import annotations

from blocks.core.errors import InvalidArgument
from blocks.search.sharded import SHARDS_MAX, ShardedIndex

__all__ = ["REPLICAS_MAX", "connect_shards", "parse_shards"]

REPLICAS_MAX = 16
ADDRESS_CHARS_MAX = 255


def parse_shards(spec: str) -> list[list[str]]:
    """``"A+B,C"`` -> ``[["A", "B"], ["C"]]``; raises ``InvalidArgument`` for a malformed spec."""
    shards = [[address.strip() for address in group.split("+")] for group in spec.split(",")]
    if not 1 <= len(shards) <= SHARDS_MAX:
        raise InvalidArgument(f"--remote-shards needs 1..{SHARDS_MAX} shards")
    for replicas in shards:
        if not 1 <= len(replicas) <= REPLICAS_MAX:
            raise InvalidArgument(f"a shard has 1..{REPLICAS_MAX} replicas joined by '+'")
        for address in replicas:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or len(address) > ADDRESS_CHARS_MAX:
                raise InvalidArgument(f"shard address {address!r} is not HOST:PORT")
    return shards


def connect_shards(
    spec: str, *, token: str | None = None, timeout_ms: int = 10_000
) -> ShardedIndex:
    """A ``ShardedIndex`` over clients of the shard nodes in ``spec`` (asks each its dim).

    Raises ``InvalidArgument`` for a malformed spec or shards that disagree on dim or metric,
    ``Unavailable`` when a shard node cannot be reached.
    """
    from blocks.search.client import SearchClient

    clients: list[SearchClient] = []
    try:
        shards = []
        for replicas in parse_shards(spec):
            group = [SearchClient(a, token=token, timeout_s=timeout_ms / 1000) for a in replicas]
            clients += group
            shards.append(group)
        return ShardedIndex(shards, timeout_ms=timeout_ms)
    except BaseException:
        for client in clients:
            client.close()
        raise
