"""Counts across nodes: CRDT counters replicated by gossip, sharded counters and sketches.

``GCounter``/``PNCounter`` are state-based CRDTs that ``GossipReplica``/``GossipNode``
replicate; ``LocalCounters`` and ``ShardedCounters`` count in one process; ``HyperLogLog``
counts distinct items and ``CountMinSketch``/``TopK`` count frequent ones, all mergeable.
"""

from blocks.counters.api import Counters
from blocks.counters.countmin import CountMinSketch, TopK
from blocks.counters.crdt import GCounter, PNCounter
from blocks.counters.gossip import GossipNode, GossipReplica, Outbound
from blocks.counters.hyperloglog import HyperLogLog
from blocks.counters.kvsharded import KvShardedCounters
from blocks.counters.local import LocalCounters, ShardedCounters

__all__ = [
    "CountMinSketch",
    "Counters",
    "GCounter",
    "GossipNode",
    "GossipReplica",
    "HyperLogLog",
    "KvShardedCounters",
    "LocalCounters",
    "Outbound",
    "PNCounter",
    "ShardedCounters",
    "TopK",
]
