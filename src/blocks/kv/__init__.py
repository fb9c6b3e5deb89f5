"""kv: a durable key-value engine (Bitcask) and the pure core of a Dynamo-style cluster.

``Bitcask`` is the embedded single-node engine; ``KeyValueStore`` (``api.py``) is the
interface it implements and ``blocks.kv.contract`` checks any implementation against a dict.
The cluster core (``KVNodeCore`` with dotted version vectors, sloppy quorum, hinted handoff,
read repair and Merkle anti-entropy) is logic without I/O, driven by a simulator in tests.
"""

from blocks.kv.api import KeyValueStore
from blocks.kv.bitcask import Bitcask, BitcaskStats, SyncPolicy
from blocks.kv.hlc import HlcTimestamp, HybridLogicalClock
from blocks.kv.merkle import MerkleTree, differing_leaves
from blocks.kv.node import KVNodeCore, QuorumConfig, plan_targets
from blocks.kv.versions import Dot, Sibling, VersionedObject, VersionVector, merge, update

__all__ = [
    "Bitcask",
    "BitcaskStats",
    "Dot",
    "HlcTimestamp",
    "HybridLogicalClock",
    "KVNodeCore",
    "KeyValueStore",
    "MerkleTree",
    "QuorumConfig",
    "Sibling",
    "SyncPolicy",
    "VersionVector",
    "VersionedObject",
    "differing_leaves",
    "merge",
    "plan_targets",
    "update",
]
