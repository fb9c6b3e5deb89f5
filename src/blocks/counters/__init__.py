"""Counts across nodes: CRDT counters replicated by gossip, sharded counters and sketches.

``GCounter``/``PNCounter`` are state-based CRDTs that ``GossipReplica``/``GossipNode``
replicate; ``LocalCounters`` and ``ShardedCounters`` count in one process; ``HyperLogLog``
counts distinct items and ``CountMinSketch``/``TopK`` count frequent ones, all mergeable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocks.counters.api import Counters
from blocks.counters.countmin import CountMinSketch, TopK
from blocks.counters.crdt import GCounter, PNCounter
from blocks.counters.gossip import GossipNode, GossipReady, GossipReplica
from blocks.counters.hyperloglog import HyperLogLog
from blocks.counters.kvsharded import KvShardedCounters
from blocks.counters.local import LocalCounters, ShardedCounters

__all__ = [
    "CountMinSketch",
    "Counters",
    "GCounter",
    "GossipNode",
    "GossipReady",
    "GossipReplica",
    "HyperLogLog",
    "KvShardedCounters",
    "LocalCounters",
    "PNCounter",
    "ShardedCounters",
    "TopK",
    "connect",
]


if TYPE_CHECKING:
    from blocks.counters.client import CountersClient


def connect(
    address: str = "127.0.0.1:7302", *, token: str | None = None, timeout_s: float = 10.0
) -> CountersClient:
    """An async client of the counters node at ``address``; use it with ``async with`` (``HOST:PORT``, the default is ``blocks counters serve``'s)."""
    from blocks.counters.client import CountersClient

    return CountersClient(address, token=token, timeout_s=timeout_s)
